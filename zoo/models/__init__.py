"""Whole models assembled from configs."""

from zoo.models.decoder import DecoderLM, EncoderLM
from zoo.models.encoder_decoder import EncoderDecoderLM
from zoo.models.model import ARCHITECTURES, Model, build
from zoo.models.outputs import EncoderDecoderCache, Features, Output

__all__ = ["ARCHITECTURES", "DecoderLM", "EncoderDecoderCache", "EncoderDecoderLM", "EncoderLM", "Features", "Model", "Output", "build"]
