"""Logical axis names carried by params; one rule table (train/partition.py) maps them to a mesh."""

VOCAB = "vocab"  # rows of an embedding table
EMBED = "embed"  # model width m
MLP = "mlp"  # hidden width f of a feed-forward or conv feature map
CLASSES = "classes"  # output classes of a head
KERNEL = "kernel"  # spatial width of a convolution kernel (never sharded)
HEADS = "heads"  # attention heads h
HEAD_DIM = "head_dim"  # width d of one head

# Activations (for nn.with_logical_constraint; no-ops outside an spmd step)
BATCH = "batch"  # rows of a batch
LENGTH = "length"  # sequence positions
ACT_EMBED = "act_embed"  # model width of hidden states (kept whole: params, not activations, carry FSDP)
