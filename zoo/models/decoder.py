"""Decoder-only language model: embeddings, a scanned tower of causal blocks, logits."""

from __future__ import annotations

import jax
from flax import nnx

from zoo.config import ModelConfig
from zoo.models import ends, tower
from zoo.models.block import norm


class DecoderLM(nnx.Module):
    """tokens [B, T] -> logits [B, T, V], attending causally within each segment.

    The output projection is the embedding table when `tie_embeddings`, else its own
    [D, V] matrix. Post-norm models have no final norm (each block ends with one).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        ends.attach_inputs(self, config, rngs)
        self.positions = tower.scheme(config, causal=True, rngs=rngs)
        *first, self.layers = tower.build(config, config.num_layers, positions=self.positions, causal=True, rngs=rngs)
        self.first_layers = first[0] if first else None  # moe.first_dense layers, when they differ from the rest
        self.final_norm = None if config.block == "post_norm" else norm(config)
        ends.attach_outputs(self, config, rngs)

    @property
    def segments(self) -> tuple[nnx.Module, ...]:
        return tuple(segment for segment in (self.first_layers, self.layers) if segment is not None)

    def __call__(self, tokens, positions=None, segment_ids=None, cache=None, *, global_tokens=None):
        """Logits [B, T, V] and the updated cache; see `features` for the arguments."""
        hidden, cache, _ = self.features(tokens, positions, segment_ids, cache, global_tokens=global_tokens)
        return self.logits(hidden), cache

    def features(self, tokens, positions=None, segment_ids=None, cache=None, *, global_tokens=None, noise_key=None):
        """(final hidden states [B, T, D] before the output projection, updated cache, MoE aux).

        tokens: [B, T] int. segment_ids: [B, T], default all one segment; tokens attend
        only within their segment and 0 marks padding. positions: [B, T], default 0, 1, ...
        within each segment, after what the cache holds. cache: from `init_cache`, or None.
        global_tokens: bool [B, T], tokens that windowed layers let see and be seen by all.
        noise_key: randomness for noisy routers in training. aux: see tower.run.
        """
        positions, aligned = tower.positions_for(tokens, positions, segment_ids, cache)
        x = ends.embed(self, tokens, self.positions, positions)
        x, cache, aux = tower.run(
            self.segments, self.config, x, positions, segment_ids, cache, aligned=aligned,
            global_tokens=global_tokens, bias=self.positions.logit_bias(), noise_key=noise_key,
        )
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, cache, aux

    def init_cache(self, batch: int, length: int):
        """Empty caches of `length` slots for every layer (see tower.empty_caches)."""
        return tower.empty_caches(self.segments, self.config, batch, length)

    def balance_routers(self, aux) -> None:
        """One loss-free balancing update of the routers' biases from the loads in `aux` (from features)."""
        tower.balance_routers(self.segments, aux, self.config.moe.bias_update_rate)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [B, T, D] -> logits [B, T, V]."""
        return ends.logits(self, hidden)
