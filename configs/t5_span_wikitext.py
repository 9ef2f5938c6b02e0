"""T5 span-corruption pretraining (Raffel et al. 2020) of a small T5 from scratch on WikiText-2.

Run:
  flaxtrain train --config configs/t5_span_wikitext.py          # 3+3 layers, width 256, 8k unigram vocabulary
  flaxtrain train --config configs/t5_span_wikitext.py:tiny     # 2+2 layers, width 32, 20 steps: a smoke run

No T5 vocabulary ships offline: `data.tokenizer = 'unigram'` trains one on the training files (with T5's
100 sentinels) and saves it beside the predictor. Noise density 0.15, mean span 3: 128 input tokens come
from 141-token packed rows, with 29-token targets. Test metrics: target-token loss, accuracy, perplexity.
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "tiny"):
        raise ValueError(f"unknown variant {variant!r} of t5_span_wikitext: use 'default' or 'tiny'")
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = "t5"  # from scratch (a T5 checkpoint folder: continued pretraining, no sizes)
    config.model.num_layers = 3  # encoder blocks
    config.model.num_decoder_layers = 3  # decoder blocks
    config.model.hidden_size = 256  # model width
    config.model.num_heads = 4  # attention heads
    config.model.head_dim = 64  # width of each head
    config.model.mlp_dim = 1024  # gated-GELU feed-forward width

    config.data = ml_collections.ConfigDict()
    config.data.name = "wikitext2"  # named corpus (flaxtrain.api.experiment.CORPORA)
    config.data.objective = "span_corruption"
    config.data.tokenizer = "unigram"  # trained on the training files; or a T5 folder / tokenizer.json
    config.data.vocab_size = 8_000  # of a trained tokenizer, sentinels included
    config.data.maxlen = 128  # encoder input tokens (targets: 29)
    config.data.max_examples = 0  # read only this many documents per split (0: all)
    config.data.packing = True  # span corruption needs full packed rows

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 1e-3  # peak of the 1cycle schedule
    config.optim.weight_decay = 0.0
    config.optim.clip_norm = 1.0

    config.train = ml_collections.ConfigDict()
    config.train.schedule = "onecycle"
    config.train.epochs = 1  # passes over WikiText-2 train (when max_steps is 0)
    config.train.max_steps = 0  # optimizer steps (0: train by epochs)
    config.train.batch_size = 32
    config.train.swa_from = 0
    config.train.seed = 0
    config.train.workdir = "runs/t5_span_wikitext"
    config.train.grad_accum_steps = 1
    config.train.precision = "float32"
    config.train.checkpoint_every = 500
    config.train.resume = False
    config.train.compilation_cache = True  # JAX's persistent compilation cache in ~/.cache/flaxtrain/xla
    config.train.tensorboard = True

    config.mesh = ml_collections.ConfigDict()
    config.mesh.strategy = "auto"
    config.mesh.data = 0
    config.mesh.fsdp = 1
    config.mesh.tensor = 1

    if variant == "tiny":
        config.model.num_layers = 2
        config.model.num_decoder_layers = 2
        config.model.hidden_size = 32
        config.model.num_heads = 2
        config.model.head_dim = 16
        config.model.mlp_dim = 64
        config.data.vocab_size = 1_000
        config.data.maxlen = 64
        config.data.max_examples = 400  # documents read per split (and for the tokenizer)
        config.train.max_steps = 20
        config.train.batch_size = 8
        config.train.checkpoint_every = -1
        config.train.tensorboard = False
        config.train.workdir = "runs/t5_span_wikitext_tiny"
    config.lock()
    return config
