"""Encoder-decoder (T5/BART-like) models: an Embedder, an encoder tower, a cross-attending decoder tower, a Head."""

from __future__ import annotations

import jax
from flax import nnx

from zoo.config import ModelConfig
from zoo.layers import taps
from zoo.models import wiring
from zoo.models.outputs import EncoderDecoderCache, Features, Output
from zoo.models.tower import positions_for


class EncoderDecoderLM(nnx.Module):
    """(encoder_tokens [B, S], tokens [B, T]) -> logits [B, T, V] over the decoder's tokens.

    The encoder (bidirectional, `encoder_layers` deep) reads encoder_tokens; each decoder
    block attends causally to the decoder's tokens, then to the encoder's output, then
    runs its feed-forward. The embedding table is shared by both towers and the output.
    The cache is an EncoderDecoderCache, whose memory the first call that passes
    encoder_tokens fills.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embedder = wiring.embedder(config, rngs)
        self.encoder = wiring.tower(config, config.encoder_layers or config.num_layers, causal=False, rngs=rngs)
        self.decoder = wiring.tower(config, config.num_layers, causal=True, cross=True, rngs=rngs)
        self.head = wiring.head(config, rngs)

    def encode(self, tokens, segment_ids=None, positions=None, *, noise_key=None) -> Features:
        """Encoder tokens [B, S] -> the encoder's Features (hidden: the memory [B, S, D])."""
        with taps.tower("encoder"):
            positions, aligned = positions_for(tokens, positions, segment_ids, None)
            x = self.embedder(tokens, positions, self.encoder.position_scheme)
            return self.encoder(x, positions, segment_ids, aligned=aligned, noise_key=noise_key)

    def __call__(self, tokens, positions=None, segment_ids=None, cache=None, **inputs) -> Output:
        features = self.features(tokens, positions, segment_ids, cache, **inputs)
        return Output(self.logits(features.hidden), features.cache, features.moe)

    def features(
        self, tokens, positions=None, segment_ids=None, cache: EncoderDecoderCache | None = None, *,
        encoder_tokens=None, encoder_segment_ids=None, noise_key=None,
    ) -> Features:
        """The decoder's final hidden states [B, T, D], the updated cache, and the MoE statistics
        of both towers (the encoder's first).

        encoder_tokens, encoder_segment_ids: [B, S]; needed unless the cache already holds
        their memory. Decoder and encoder segment ids pair up: decoder segment i reads
        encoder segment i.
        """
        encoder_moe = ()
        if encoder_tokens is not None:
            encoder_key = None if noise_key is None else jax.random.fold_in(noise_key, 1)
            encoded = self.encode(encoder_tokens, encoder_segment_ids, noise_key=encoder_key)
            memory, encoder_moe = self.decoder.memory_cache(encoded.hidden, encoder_segment_ids), encoded.moe
        elif cache is not None and cache.memory is not None:
            memory = cache.memory
        else:
            raise ValueError("an encoder-decoder model needs encoder_tokens (or a cache that already holds their memory)")
        self_cache = None if cache is None else cache.decoder
        with taps.tower("decoder"):
            positions, aligned = positions_for(tokens, positions, segment_ids, self_cache)
            x = self.embedder(tokens, positions, self.decoder.position_scheme)
            decoded = self.decoder(x, positions, segment_ids, self_cache, aligned=aligned, memory=memory, noise_key=noise_key)
        new_cache = None if cache is None else EncoderDecoderCache(decoded.cache, memory)
        return Features(decoded.hidden, new_cache, encoder_moe + decoded.moe)

    def init_cache(self, batch: int, length: int) -> EncoderDecoderCache:
        """Empty decoder caches; the memory is added by the first call with encoder_tokens."""
        return EncoderDecoderCache(self.decoder.empty_cache(batch, length))

    def balance_routers(self, moe) -> None:
        """One loss-free balancing update of both towers' router biases from `moe` (Features.moe)."""
        split = len(list(self.encoder.moe_blocks()))
        rate = self.config.moe.bias_update_rate
        self.encoder.balance_routers(moe[:split], rate)
        self.decoder.balance_routers(moe[split:], rate)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [B, T, D] -> logits [B, T, V]."""
        return self.head(hidden, self.embedder.embedding)
