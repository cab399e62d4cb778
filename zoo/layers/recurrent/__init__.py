"""Recurrent sequence mixers (Mamba-2, Gated DeltaNet) and their pieces: a fixed-size cache of
states, the short causal convolution and the gated RMSNorm they share."""

from zoo.layers.recurrent.cache import RecurrentCache
from zoo.layers.recurrent.conv import ShortConv, causal_conv
from zoo.layers.recurrent.gated_norm import GatedRMSNorm

__all__ = ["GatedRMSNorm", "RecurrentCache", "ShortConv", "causal_conv"]
