"""Decoder-only and encoder-only language models: an Embedder, one tower, a Head."""

from __future__ import annotations

import jax
from flax import nnx

from zoo.config import ModelConfig
from zoo.models import wiring
from zoo.models.outputs import Features, Output
from zoo.models.tower import positions_for


class DecoderLM(nnx.Module):
    """tokens [B, T] -> logits [B, T, V], attending causally within each segment.

    The output projection is the embedding table when `tie_embeddings`, else its own
    [D, V] matrix. Post-norm models have no final norm (each block ends with one).
    """

    causal = True

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        self.embedder = wiring.embedder(config, rngs)
        self.tower = wiring.tower(config, config.num_layers, causal=self.causal, rngs=rngs)
        self.head = wiring.head(config, rngs)

    def __call__(self, tokens, positions=None, segment_ids=None, cache=None, **inputs) -> Output:
        """Logits, the updated cache and MoE statistics; see `features` for the arguments."""
        features = self.features(tokens, positions, segment_ids, cache, **inputs)
        return Output(self.logits(features.hidden), features.cache, features.moe)

    def features(
        self, tokens, positions=None, segment_ids=None, cache=None, *, global_tokens=None, token_types=None, noise_key=None
    ) -> Features:
        """The final hidden states [B, T, D] before the output projection, the updated cache, MoE statistics.

        tokens: [B, T] int. segment_ids: [B, T], default all one segment; tokens attend
        only within their segment and 0 marks padding. positions: [B, T], default 0, 1, ...
        within each segment, after what the cache holds. cache: from `init_cache`, or None.
        global_tokens: bool [B, T], tokens that windowed layers let see and be seen by all.
        token_types: [B, T] ids into the token-type table (BERT's sentence A / B), default 0.
        noise_key: randomness for noisy routers in training.
        """
        positions, aligned = positions_for(tokens, positions, segment_ids, cache)
        x = self.embedder(tokens, positions, self.tower.position_scheme, token_types)
        return self.tower(
            x, positions, segment_ids, cache, aligned=aligned, global_tokens=global_tokens, noise_key=noise_key
        )

    def init_cache(self, batch: int, length: int) -> tuple:
        """Empty caches of `length` slots for every layer (see Tower.empty_cache)."""
        return self.tower.empty_cache(batch, length)

    def balance_routers(self, moe) -> None:
        """One loss-free balancing update of the routers' biases from `moe` (Features.moe)."""
        self.tower.balance_routers(moe, self.config.moe.bias_update_rate)

    def logits(self, hidden: jax.Array) -> jax.Array:
        """hidden [B, T, D] -> logits [B, T, V]."""
        return self.head(hidden, self.embedder.embedding)


class EncoderLM(DecoderLM):
    """tokens [B, T] -> logits [B, T, V]: every token sees its whole segment (masked-language-model style).

    `features` gives the final hidden states [B, T, D] for other heads. An encoder
    attends in both directions, so it keeps no cache and does not generate.
    """

    causal = False

    def features(self, tokens, positions=None, segment_ids=None, cache=None, **inputs) -> Features:
        """As DecoderLM.features, attending both ways and without a cache."""
        if cache is not None:
            raise ValueError("an encoder attends in both directions and keeps no cache")
        return super().features(tokens, positions, segment_ids, **inputs)

    def init_cache(self, batch: int, length: int):
        raise ValueError("encoder-only models keep no cache and do not generate; use a decoder or encoder_decoder kind")
