"""A model as pure functions of (params, inputs), built from its config."""

from __future__ import annotations

import dataclasses

import jax
from flax import nnx

from zoo.config import LoraConfig, ModelConfig
from zoo.layers.lora import attach
from zoo.layers.quantized import quantize_weights
from zoo.models.decoder import DecoderLM, EncoderLM
from zoo.models.encoder_decoder import EncoderDecoderLM
from zoo.models.outputs import Output
from zoo.registry import Registry

ARCHITECTURES: Registry = Registry("model kind")
ARCHITECTURES.register("decoder")(DecoderLM)
ARCHITECTURES.register("encoder")(EncoderLM)
ARCHITECTURES.register("encoder_decoder")(EncoderDecoderLM)


@dataclasses.dataclass(frozen=True, eq=False)
class Model:
    """`params = model.init(key)`, then `out = model.apply(params, tokens, ...)`: an Output with
    `out.logits`, `out.cache` and `out.moe`.

    params is an `nnx.State`: a pytree of arrays, so apply works under jax.jit, grad,
    vmap and pmap, and with params sharded over a mesh. Nothing here holds weights.
    """

    config: ModelConfig
    graphdef: nnx.GraphDef
    abstract_params: nnx.State  # shapes, dtypes and logical axes, nothing allocated
    lora: LoraConfig | None = None  # low-rank adapters on the weights it targets (nnx.LoRAParam in params)
    dropout: bool = False  # built for training: the adapters' dropout on (its keys, lora.DropoutKey, among the params)

    def init(self, key: jax.Array) -> nnx.State:
        """Fresh parameters from a PRNG key (adapters included, their B at zero)."""
        return nnx.state(_make(self.config, self.lora, key, self.dropout))

    def for_training(self) -> Model:
        """This model with its adapters' dropout on, when it has any (a model to give train_step)."""
        if self.lora is None or self.lora.dropout == 0 or self.dropout:
            return self
        return build(self.config, self.lora, dropout=True)

    def bind(self, params: nnx.State) -> nnx.Module:
        """The module with these params, for its other methods (e.g. `features`)."""
        return nnx.merge(self.graphdef, params)

    def apply(
        self,
        params: nnx.State,
        tokens: jax.Array,
        positions: jax.Array | None = None,
        segment_ids: jax.Array | None = None,
        cache=None,
        **inputs,
    ) -> Output:
        """Logits [B, T, V] for tokens [B, T], the updated cache (None without one) and MoE statistics.

        segment_ids: [B, T], default one segment; 0 is padding. positions: [B, T], default
        0, 1, ... within each segment after the cache. cache: from `init_cache`. Other
        inputs go to the model (an encoder-decoder's encoder_tokens, encoder_segment_ids).
        """
        return self.bind(params)(tokens, positions, segment_ids, cache, **inputs)

    def init_cache(self, batch: int, length: int | None = None):
        """An empty cache for `batch` rows of up to `length` tokens (default max_seq_len)."""
        return self.bind(self.abstract_params).init_cache(batch, length or self.config.max_seq_len)


def build(config: ModelConfig, lora: LoraConfig | None = None, *, dropout: bool = False) -> Model:
    """The functional model for a config, without allocating its weights; with `lora`, adapters
    on the weights it targets (ValueError when a target matches none or the rank is too large),
    their dropout on when `dropout` (see Model.for_training)."""
    module = nnx.eval_shape(lambda: _make(config, lora, jax.random.key(0), dropout))
    graphdef, abstract_params = nnx.split(module)
    return Model(config, graphdef, abstract_params, lora, dropout)


def _make(config: ModelConfig, lora: LoraConfig | None, key: jax.Array, dropout: bool) -> nnx.Module:
    module = ARCHITECTURES.get(config.kind)(config, rngs=nnx.Rngs(key))
    if config.quantization != "none":  # random weights, quantized: the shapes a quantized run's checkpoint holds
        quantize_weights(module, config.quantization)
    if lora is not None:
        rate = lora.dropout if dropout else 0.0
        attach(module, lora.rank, lora.scale_alpha, lora.targets, nnx.Rngs(jax.random.fold_in(key, 1)), rate)
    return module


def quantized(model: Model, params: nnx.State, scheme: str) -> tuple[Model, nnx.State]:
    """A float model and its params -> the model with model.quantization = `scheme` and its params,
    the linear weights quantized (zoo.layers.quantized)."""
    if model.config.quantization != "none":
        raise ValueError(f"the model is already quantized ({model.config.quantization})")
    module = model.bind(jax.tree.map(lambda x: x, params))
    quantize_weights(module, scheme)
    config = dataclasses.replace(model.config, quantization=scheme)
    return build(config, model.lora), nnx.state(module)
