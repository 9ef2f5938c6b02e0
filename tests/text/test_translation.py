"""Real-data encoder-decoder run (slow): a Marian-layout model trained from scratch on Django's
English -> German catalogue pairs overfits them (BLEU on the training pairs)."""

import pytest

import flaxtrain
from flaxtrain.data import django_translations, translation_from_pairs
from flaxtrain.eval import translation_metrics

pytestmark = pytest.mark.slow


def test_marian_from_scratch_overfits_the_django_en_de_pairs(tmp_path):
    sources, targets = django_translations("de")
    _, _, probe = translation_from_pairs(sources, targets, val_pct=0, vocab_size=1000, verbose=0)
    fits = [i for i, (s, t) in enumerate(zip(sources, targets))  # pairs of at most 32 tokens a side
            if max(len(probe.tokenizer.encode(s).ids), len(probe.tokenizer.encode(t).ids)) <= 32]
    assert len(fits) > 700
    fits = fits[:128]  # enough to prove memorization (BLEU 94.7 on the 2-core machine); fewer steps keep the suite short
    trn, _, preproc = translation_from_pairs([sources[i] for i in fits], [targets[i] for i in fits], val_pct=0,
                                             maxlen=32, max_target_length=32, tokenizer=probe.tokenizer, verbose=0)
    model = flaxtrain.get_model("marian", trn, params=dict(hidden_size=128, num_layers=2, num_decoder_layers=2,
                                                           head_dim=32, mlp_dim=256, dropout_rate=0.0))
    learner = flaxtrain.get_learner(model, trn, batch_size=32)
    learner.fit_onecycle(3e-3, 30, verbose=0)
    scores = learner.validate(trn)  # greedy decoding of every training source against its reference
    print(f"django en->de, {len(trn)} training pairs: {scores}")
    assert scores["bleu"] > 80, scores

    predictor = flaxtrain.get_predictor(learner.model, batch_size=32)
    some = trn.sources[:64]
    beams = predictor.predict(some, num_beams=4)
    assert translation_metrics(beams, trn.targets[:64])["bleu"] > 80
    predictor.save(tmp_path / "mt")
    assert flaxtrain.load_predictor(tmp_path / "mt", batch_size=32).predict(some, num_beams=4) == beams
    worst = learner.top_losses(3, val_data=trn)
    assert len(worst) == 3 and worst[0][1] >= worst[-1][1] and worst[0][2] in trn.targets
