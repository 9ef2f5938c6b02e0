"""TextCNN (Kim 2014) sentiment classifier on rotten_tomatoes: the default job of `flaxtrain train`.

Run:
  flaxtrain train                                            # this file's default variant
  flaxtrain train --config configs/textcnn_rotten_tomatoes.py:tiny
  flaxtrain train --config configs/textcnn_rotten_tomatoes.py --config.optim.lr=5e-4

Variants:
  default  TextCNN initialised with all-MiniLM-L6-v2's word-piece vectors, fine-tuned (Kim 2014's
           "non-static" model) with weight averaging over epochs 2-4: the reported run.
  rand     Kim's CNN-rand: a word tokenizer trained on the training texts, random 128-d vectors.
  tiny     random vectors of width 32, 2 conv widths, batch 4, 200 examples: for tests and smoke runs.
"""

from __future__ import annotations

import ml_collections
from ml_collections import config_dict


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "rand", "tiny"):
        raise ValueError(f"unknown variant {variant!r} of textcnn_rotten_tomatoes: use 'default', 'rand' or 'tiny'")
    config = ml_collections.ConfigDict()

    config.model = ml_collections.ConfigDict()
    config.model.name = "textcnn"  # registered model name (flaxtrain.models.MODELS)
    config.model.word_vectors = config_dict.placeholder(str)  # pretrained vectors + their tokenizer (None: random)
    config.model.embed_dim = 128  # word vector width (taken from word_vectors when set)
    config.model.num_filters = 100  # feature maps per kernel width
    config.model.kernel_sizes = (3, 4, 5)  # convolution widths, in tokens
    config.model.dropout_rate = 0.5  # dropout probability on the pooled features

    config.data = ml_collections.ConfigDict()
    config.data.name = "rotten_tomatoes"  # named dataset (flaxtrain.text.load_data)
    config.data.data_dir = config_dict.placeholder(str)  # TFDS data_dir for TFDS-backed sets
    config.data.download = False  # let TFDS download a set missing from data_dir (nothing downloads otherwise)
    config.data.maxlen = 80  # tokens kept per text (the longest snippet has 53 words, about 70 word pieces)
    config.data.max_features = 20_000  # vocabulary size, special tokens included
    config.data.val_pct = 0.1  # fraction of the training split held out for validation
    config.data.max_examples = 0  # use only this many training texts (0: all)

    config.optim = ml_collections.ConfigDict()
    config.optim.lr = 5e-4  # Adam learning rate (constant)
    config.optim.weight_decay = 0.0  # decoupled weight decay (AdamW)
    config.optim.clip_norm = config_dict.placeholder(float)  # global gradient-norm clip (None: off)

    config.train = ml_collections.ConfigDict()
    config.train.epochs = 4  # passes over the training set
    config.train.swa_from = 2  # keep the average of the weights after epochs swa_from..epochs (0: last weights)
    config.train.batch_size = 50  # examples per step (Kim 2014 used 50)
    config.train.seed = 0  # seeds init, shuffling and dropout
    config.train.workdir = "runs/textcnn_rotten_tomatoes"  # where the predictor is saved
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

    if variant == "default":
        config.model.word_vectors = "minilm"
    if variant == "rand":
        config.data.maxlen = 64
        config.optim.lr = 1e-3
        config.train.epochs = 5
        config.train.workdir = "runs/textcnn_rotten_tomatoes_rand"
    if variant == "tiny":
        config.model.embed_dim = 32
        config.model.num_filters = 8
        config.model.kernel_sizes = (3, 5)
        config.data.max_features = 2_000
        config.data.max_examples = 200
        config.train.epochs = 2
        config.train.swa_from = 1
        config.train.batch_size = 4
        config.train.workdir = "runs/textcnn_rotten_tomatoes_tiny"
    config.lock()
    return config
