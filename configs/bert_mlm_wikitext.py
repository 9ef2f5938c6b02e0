"""Masked-LM pretraining of a small BERT from scratch on WikiText-2 (streamed, packed rows).

Run:
  flaxtrain train --config configs/bert_mlm_wikitext.py            # 4 layers, width 256, MiniLM's word pieces
  flaxtrain train --config configs/bert_mlm_wikitext.py:tiny       # 2 layers, width 32, 20 steps: a smoke run

The saved predictor fills masks (`load_predictor(dir).predict('Paris is the [MASK] of France .')`);
`get_predictor(model).save_pretrained(dir)` writes a BertForMaskedLM folder. Test metrics: masked-token
loss, accuracy and perplexity on WikiText-2 test.
"""

from __future__ import annotations

import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "tiny"):
        raise ValueError(f"unknown variant {variant!r} of bert_mlm_wikitext: use 'default' or 'tiny'")
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = "bert"  # from scratch ('minilm' or a checkpoint folder: continued pretraining, no sizes)
    config.model.num_layers = 4  # encoder blocks
    config.model.hidden_size = 256  # model width
    config.model.num_heads = 4  # attention heads
    config.model.mlp_dim = 1024  # feed-forward width

    config.data = ml_collections.ConfigDict()
    config.data.name = "wikitext2"  # named corpus (flaxtrain.api.experiment.CORPORA)
    config.data.objective = "mlm"  # masked-LM: 15% of tokens chosen, 80/10/10
    config.data.tokenizer = "minilm"  # word pieces: 'minilm', a checkpoint folder or a tokenizer.json
    config.data.maxlen = 128  # tokens per packed row
    config.data.max_examples = 0  # read only this many documents per split (0: all)
    config.data.packing = True  # documents packed into full rows (segment ids keep them apart)
    config.data.whole_word_masking = False  # choose whole words instead of single word pieces

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 1e-3  # peak of the 1cycle schedule
    config.optim.weight_decay = 0.01  # decoupled weight decay (AdamW)
    config.optim.clip_norm = 1.0  # global gradient-norm clip

    config.train = ml_collections.ConfigDict()
    config.train.schedule = "onecycle"  # warm-up then cosine annealing
    config.train.epochs = 1  # passes over WikiText-2 train (when max_steps is 0)
    config.train.max_steps = 0  # optimizer steps (0: train by epochs)
    config.train.batch_size = 32  # rows per step
    config.train.swa_from = 0  # weight averaging off
    config.train.seed = 0  # seeds init, shuffling, masking and dropout
    config.train.workdir = "runs/bert_mlm_wikitext"  # predictor (and checkpoints, TensorBoard) here
    config.train.grad_accum_steps = 1  # micro-batches per step
    config.train.precision = "float32"  # float32 or bfloat16 compute
    config.train.checkpoint_every = 500  # workdir/checkpoints every N steps and at epoch ends (-1: none)
    config.train.resume = False  # continue the run in workdir/checkpoints
    config.train.compilation_cache = True  # JAX's persistent compilation cache in ~/.cache/flaxtrain/xla
    config.train.tensorboard = True  # loss, accuracy, lr, tokens/s and MFU in workdir/tensorboard

    config.mesh = ml_collections.ConfigDict()
    config.mesh.strategy = "auto"  # auto (data parallel over all devices), spmd, pmap or single
    config.mesh.data = 0  # spmd mesh sizes (data, fsdp, tensor); data 0: the devices left over
    config.mesh.fsdp = 1
    config.mesh.tensor = 1

    if variant == "tiny":
        config.model.num_layers = 2
        config.model.hidden_size = 32
        config.model.num_heads = 2
        config.model.mlp_dim = 64
        config.data.maxlen = 64
        config.data.max_examples = 100  # documents read per split (about 300 rows of 64 tokens)
        config.train.max_steps = 20
        config.train.batch_size = 8
        config.train.checkpoint_every = -1
        config.train.tensorboard = False
        config.train.workdir = "runs/bert_mlm_wikitext_tiny"
    config.lock()
    return config
