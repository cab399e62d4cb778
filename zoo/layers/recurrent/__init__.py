"""Recurrent sequence mixers (Mamba-2, Gated DeltaNet) and their pieces: a fixed-size cache of
states, the short causal convolution and the gated RMSNorm they share."""

from zoo.layers.recurrent.cache import RecurrentCache
from zoo.layers.recurrent.conv import ShortConv, causal_conv
from zoo.layers.recurrent.delta_rule import gated_delta_rule
from zoo.layers.recurrent.gated_deltanet import GatedDeltaNet
from zoo.layers.recurrent.gated_norm import GatedRMSNorm
from zoo.layers.recurrent.mamba2 import Mamba2
from zoo.layers.recurrent.ssd import segment_starts, ssd_scan

__all__ = [
    "GatedDeltaNet", "GatedRMSNorm", "Mamba2", "RecurrentCache", "ShortConv", "causal_conv", "gated_delta_rule", "segment_starts",
    "ssd_scan",
]
