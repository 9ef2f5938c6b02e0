"""Logical axis names carried by params; one rule table (train/partition.py) maps them to a mesh."""

VOCAB = "vocab"  # rows of an embedding table
EMBED = "embed"  # model width m
MLP = "mlp"  # hidden width f of a feed-forward or conv feature map
CLASSES = "classes"  # output classes of a head
KERNEL = "kernel"  # spatial width of a convolution kernel (never sharded)
HEADS = "heads"  # attention heads h
HEAD_DIM = "head_dim"  # width d of one head
