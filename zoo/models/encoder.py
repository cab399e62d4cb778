"""Encoder-only (BERT-like) and encoder-decoder (T5/BART-like) models."""

from __future__ import annotations

import jax
from flax import nnx

from zoo.config import ModelConfig
from zoo.models import ends, tower
from zoo.models.block import norm


class EncoderLM(nnx.Module):
    """tokens [B, T] -> logits [B, T, V]: every token sees its whole segment (masked-language-model style).

    `features` gives the final hidden states [B, T, D] for other heads. An encoder
    attends in both directions, so it keeps no cache and does not generate.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        ends.attach_inputs(self, config, rngs)
        self.positions = tower.scheme(config, causal=False, rngs=rngs)
        *first, self.layers = tower.build(config, config.num_layers, positions=self.positions, causal=False, rngs=rngs)
        self.first_layers = first[0] if first else None
        self.final_norm = None if config.block == "post_norm" else norm(config)
        ends.attach_outputs(self, config, rngs)

    @property
    def segments(self) -> tuple[nnx.Module, ...]:
        return tuple(segment for segment in (self.first_layers, self.layers) if segment is not None)

    def __call__(self, tokens, positions=None, segment_ids=None, cache=None, *, global_tokens=None, token_types=None):
        if cache is not None:
            raise ValueError("an encoder attends in both directions and keeps no cache")
        hidden, _, _ = self.features(tokens, positions, segment_ids, global_tokens=global_tokens, token_types=token_types)
        return self.logits(hidden), None

    def features(
        self, tokens, positions=None, segment_ids=None, cache=None, *, global_tokens=None, token_types=None, noise_key=None
    ):
        """As DecoderLM.features, attending both ways; an encoder keeps no cache (returns None).
        token_types: [B, T] ids into the token-type table (BERT's sentence A / B), default 0."""
        if cache is not None:
            raise ValueError("an encoder attends in both directions and keeps no cache")
        positions, aligned = tower.positions_for(tokens, positions, segment_ids, None)
        x = ends.embed(self, tokens, self.positions, positions, token_types)
        x, _, aux = tower.run(
            self.segments, self.config, x, positions, segment_ids, aligned=aligned,
            global_tokens=global_tokens, bias=self.positions.logit_bias(), noise_key=noise_key,
        )
        return (x if self.final_norm is None else self.final_norm(x)), None, aux

    def init_cache(self, batch: int, length: int):
        raise ValueError("encoder-only models keep no cache and do not generate; use a decoder or encoder_decoder kind")

    def balance_routers(self, aux) -> None:
        """One loss-free balancing update of the routers' biases from the loads in `aux` (from features)."""
        tower.balance_routers(self.segments, aux, self.config.moe.bias_update_rate)

    def logits(self, hidden: jax.Array) -> jax.Array:
        return ends.logits(self, hidden)


class EncoderDecoderLM(nnx.Module):
    """(encoder_tokens [B, S], tokens [B, T]) -> logits [B, T, V] over the decoder's tokens.

    The encoder (bidirectional, `encoder_layers` deep) reads encoder_tokens; each decoder
    block attends causally to the decoder's tokens, then to the encoder's output, then
    runs its feed-forward. The embedding table is shared by both towers and the output.
    The cache is {"self": the decoder's caches, "memory": the encoder output's keys and
    values per decoder layer}, filled by the first call that passes encoder_tokens.
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs):
        self.config = config
        ends.attach_inputs(self, config, rngs)
        self.encoder_positions = tower.scheme(config, causal=False, rngs=rngs)
        *first, self.encoder_layers = tower.build(
            config, config.encoder_layers or config.num_layers, positions=self.encoder_positions, causal=False, rngs=rngs
        )
        self.encoder_first_layers = first[0] if first else None
        self.encoder_norm = None if config.block == "post_norm" else norm(config)
        self.positions = tower.scheme(config, causal=True, rngs=rngs)
        *first, self.layers = tower.build(
            config, config.num_layers, positions=self.positions, causal=True, cross=True, rngs=rngs
        )
        self.first_layers = first[0] if first else None
        self.final_norm = None if config.block == "post_norm" else norm(config)
        ends.attach_outputs(self, config, rngs)

    @property
    def encoder_segments(self) -> tuple[nnx.Module, ...]:
        return tuple(s for s in (self.encoder_first_layers, self.encoder_layers) if s is not None)

    @property
    def segments(self) -> tuple[nnx.Module, ...]:
        return tuple(s for s in (self.first_layers, self.layers) if s is not None)

    def encode(self, tokens, segment_ids=None, positions=None, *, noise_key=None) -> tuple[jax.Array, tuple]:
        """Encoder tokens [B, S] -> (memory [B, S, D], the encoder's MoE aux)."""
        positions, aligned = tower.positions_for(tokens, positions, segment_ids, None)
        x = ends.embed(self, tokens, self.encoder_positions, positions)
        x, _, aux = tower.run(
            self.encoder_segments, self.config, x, positions, segment_ids, aligned=aligned,
            bias=self.encoder_positions.logit_bias(), noise_key=noise_key,
        )
        return (x if self.encoder_norm is None else self.encoder_norm(x)), aux

    def __call__(self, tokens, positions=None, segment_ids=None, cache=None, *, encoder_tokens=None, encoder_segment_ids=None):
        hidden, cache, _ = self.features(
            tokens, positions, segment_ids, cache, encoder_tokens=encoder_tokens, encoder_segment_ids=encoder_segment_ids
        )
        return self.logits(hidden), cache

    def features(
        self, tokens, positions=None, segment_ids=None, cache=None, *, encoder_tokens=None, encoder_segment_ids=None,
        noise_key=None,
    ):
        """(the decoder's final hidden states [B, T, D], the updated cache, MoE aux of both towers).

        encoder_tokens, encoder_segment_ids: [B, S]; needed unless the cache already holds
        their memory. Decoder and encoder segment ids pair up: decoder segment i reads
        encoder segment i.
        """
        encoder_aux = ()
        if encoder_tokens is not None:
            encoder_key = None if noise_key is None else jax.random.fold_in(noise_key, 1)
            encoded, encoder_aux = self.encode(encoder_tokens, encoder_segment_ids, noise_key=encoder_key)
            memory = tower.memory_caches(self.segments, encoded, encoder_segment_ids)
        elif cache is not None and cache["memory"] is not None:
            memory = cache["memory"]
        else:
            raise ValueError("an encoder-decoder model needs encoder_tokens (or a cache that already holds their memory)")
        self_cache = None if cache is None else cache["self"]
        positions, aligned = tower.positions_for(tokens, positions, segment_ids, self_cache)
        x = ends.embed(self, tokens, self.positions, positions)
        x, self_cache, aux = tower.run(
            self.segments, self.config, x, positions, segment_ids, self_cache, aligned=aligned, memory=memory,
            bias=self.positions.logit_bias(), noise_key=noise_key,
        )
        if self.final_norm is not None:
            x = self.final_norm(x)
        return x, None if cache is None else {"self": self_cache, "memory": memory}, (encoder_aux, aux)

    def init_cache(self, batch: int, length: int):
        """Empty decoder caches; the memory is added by the first call with encoder_tokens."""
        return {"self": tower.empty_caches(self.segments, self.config, batch, length), "memory": None}

    def balance_routers(self, aux) -> None:
        """One loss-free balancing update of both towers' router biases from `aux` (from features)."""
        encoder_aux, decoder_aux = aux
        rate = self.config.moe.bias_update_rate
        tower.balance_routers(self.encoder_segments, encoder_aux, rate)
        tower.balance_routers(self.segments, decoder_aux, rate)

    def logits(self, hidden: jax.Array) -> jax.Array:
        return ends.logits(self, hidden)
