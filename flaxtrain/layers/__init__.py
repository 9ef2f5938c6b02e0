"""Flax linen building blocks that own params and call ops/."""

from flaxtrain.layers import axes
from flaxtrain.layers.attention import MultiHeadAttention
from flaxtrain.layers.dense import Dense
from flaxtrain.layers.embed import Embed
from flaxtrain.layers.mlp import MLP
from flaxtrain.layers.norm import LayerNorm, RMSNorm

__all__ = ["axes", "Embed", "Dense", "LayerNorm", "RMSNorm", "MLP", "MultiHeadAttention"]
