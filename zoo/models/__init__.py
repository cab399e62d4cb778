"""Whole models assembled from configs."""

from zoo.models.decoder import DecoderLM
from zoo.models.encoder import EncoderDecoderLM, EncoderLM
from zoo.models.model import ARCHITECTURES, Model, build

__all__ = ["ARCHITECTURES", "DecoderLM", "EncoderDecoderLM", "EncoderLM", "Model", "build"]
