"""The [model.attention] section: which attention, its kernel, and the options around it
(windows, chunks, NoPE layers, QK-norms, MLA sizes, sparse selection)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Literal

from zoo.config.section import ConfigError, Names, Section, require_non_negative, require_positive


ATTENTION_LAYERS = ("global", "local", "chunked")  # layer_pattern entries that attend
RECURRENT_LAYERS = ("mamba2", "gated_deltanet")  # layer_pattern entries that mix tokens by a recurrence
# An attention layer and a recurrent mixer side by side in one layer, their outputs summed (Falcon-H1)
PARALLEL_LAYERS = tuple(f"{attention}+{mixer}" for attention in ATTENTION_LAYERS for mixer in RECURRENT_LAYERS)
LAYER_KINDS = ATTENTION_LAYERS + RECURRENT_LAYERS + PARALLEL_LAYERS


def attention_part(kind: str) -> str | None:
    """The attention of a layer_pattern entry ("global", "local", "chunked"), None for a recurrent layer."""
    part = kind.split("+")[0]
    return part if part in ATTENTION_LAYERS else None


def recurrent_part(kind: str) -> str | None:
    """The recurrent mixer of a layer_pattern entry ("mamba2", "gated_deltanet"), None for attention alone."""
    part = kind.split("+")[-1]
    return part if part in RECURRENT_LAYERS else None


def _mixer(kind: str) -> str:
    mixer = recurrent_part(kind)
    if attention_part(kind) is None:
        return mixer
    return "attention" if mixer is None else f"attention+{mixer}"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttentionConfig(Section):
    """How tokens attend: the kernel that computes softmax(q k^T) v and the options around it."""

    # gqa covers MHA and MQA (num_kv_heads); mla is DeepSeek's latent attention
    kind: Annotated[str, Names("zoo.models.wiring:ATTENTION")] = "gqa"
    # the package, not kernels.py: its modules register the kernels ("auto" in dispatch.py)
    kernel: Annotated[str, Names("zoo.layers.attention:KERNELS")] = "auto"
    qkv_bias: bool = False
    out_bias: bool = False
    qk_norm: bool = False  # RMSNorm over Dh of each query and key head (Qwen3, Gemma 3)
    # what one QK-norm normalises: each head's Dh, or all of a token's query (and key) heads together (OLMo 2)
    qk_norm_over: Literal["head", "projection"] = "head"
    clip_qkv: float | None = None  # q, k and v clamped to [-clip_qkv, clip_qkv] (OLMo)
    logit_softcap: float | None = None  # logits -> cap * tanh(logits / cap) (Gemma 2)
    softmax_scale: float | None = None  # multiplies q.k before the softmax; default 1/sqrt(query head dim)
    sinks: bool = False  # a learned per-head logit in every softmax that no value goes with (gpt-oss)
    output_gate: bool = False  # each head's output times sigmoid(x W_gate) before o (Qwen3-Next's gated attention)
    # Layers repeat this pattern; a "local" layer sees the last `window` positions (Mistral,
    # Gemma 2), a "global" one everything. Its cache is a rolling buffer of `window` slots.
    # `window` is one size for every local layer, or a list with one per local entry.
    # "mamba2" and "gated_deltanet" layers mix tokens by a recurrence instead of attention
    # (sized by [model.mamba2] and [model.gated_deltanet]); their cache is a fixed-size state.
    # "global+mamba2" (and the other pairs) runs both side by side on the layer's input and sums them.
    layer_pattern: tuple[Literal[LAYER_KINDS], ...] = ("global",)
    window: int | tuple[int, ...] | None = None
    # A "chunked" layer's token sees only the earlier tokens of its own chunk of positions,
    # position // chunk_size (Llama 4's chunked local attention); its cache is chunk_size slots.
    chunk_size: int | None = None
    # One per layer_pattern entry: whether that layer rotates q and k by the model's RoPE;
    # false makes a NoPE layer (Llama 4, SmolLM3). Empty: every layer does.
    layer_rope: tuple[bool, ...] = ()
    qk_l2_norm: bool = False  # q, k / their RMS over Dh (no weight), after RoPE, on RoPE layers (Llama 4)
    # Llama 4's temperature tuning of the NoPE layers: queries times
    # log(floor((position + 1) / temperature_floor) + 1) * temperature_scale + 1
    temperature_tuning: bool = False
    temperature_floor: int = 8192
    temperature_scale: float = 0.1
    # MLA sizes: the key/value latent, the optional query bottleneck, and per-head dims
    kv_lora_rank: int | None = None
    q_lora_rank: int | None = None
    qk_nope_head_dim: int | None = None
    qk_rope_head_dim: int | None = None
    v_head_dim: int | None = None
    latent_norm: bool = True  # MLA: an RMSNorm on the latent (DeepSeek); off in models converted to MLA (zoo.convert)
    # DeepSeek sparse attention (MLA with a lightning indexer, DeepSeek-V3.2): the indexer's
    # heads and their size, and how many past keys each query attends to
    index_heads: int | None = None
    index_head_dim: int | None = None
    index_top_k: int | None = None

    def sparse(self) -> tuple[int, int, int] | None:
        """(index_heads, index_head_dim, index_top_k) of a sparse attention, else None."""
        return None if self.index_top_k is None else (self.index_heads, self.index_head_dim, self.index_top_k)

    def layer_windows(self) -> tuple[int | None, ...]:
        """The window of each entry of layer_pattern (None for global layers)."""
        sizes = iter(self.window if isinstance(self.window, tuple) else [self.window] * len(self.layer_pattern))
        return tuple(next(sizes) if attention_part(kind) == "local" else None for kind in self.layer_pattern)

    def layer_chunks(self) -> tuple[int | None, ...]:
        """The chunk size of each entry of layer_pattern (None for unchunked layers)."""
        return tuple(self.chunk_size if attention_part(kind) == "chunked" else None for kind in self.layer_pattern)

    def layer_mixers(self) -> tuple[str, ...]:
        """What mixes tokens in each entry of layer_pattern: "attention", "mamba2", "gated_deltanet",
        or attention and a mixer side by side ("attention+mamba2")."""
        return tuple(_mixer(kind) for kind in self.layer_pattern)

    def local_layers(self) -> int:
        """How many entries of layer_pattern attend through a sliding window."""
        return sum(attention_part(kind) == "local" for kind in self.layer_pattern)

    def layer_ropes(self) -> tuple[bool, ...]:
        """Whether each entry of layer_pattern applies RoPE (when the model's positions are RoPE)."""
        return self.layer_rope or (True,) * len(self.layer_pattern)

    def _validate(self):
        mla_sizes = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        index_sizes = ("index_heads", "index_head_dim", "index_top_k")
        positive = [name for name in mla_sizes if name != "qk_nope_head_dim"]  # every query/key dim may be rotated
        require_positive(self, "logit_softcap", "softmax_scale", "q_lora_rank", "clip_qkv", "chunk_size", "temperature_floor", *positive, *index_sizes)
        require_non_negative(self, "qk_nope_head_dim")
        if not self.latent_norm and self.kind != "mla":
            raise ConfigError("latent_norm", "is MLA's norm on its latent; this attention is not MLA")
        given = [name for name in index_sizes if getattr(self, name) is not None]
        if given and len(given) < len(index_sizes):
            missing = [name for name in index_sizes if name not in given]
            raise ConfigError(missing[0], f"sparse attention needs {', '.join(index_sizes)}; {', '.join(missing)} not set")
        if given:
            if self.kind != "mla" or self.q_lora_rank is None:
                raise ConfigError("index_top_k", "sparse attention's indexer reads MLA's query latent: set kind = \"mla\" and q_lora_rank")
            if self.kernel not in ("auto", "xla"):
                raise ConfigError("kernel", f"sparse attention's key selection runs on the 'xla' kernel, not {self.kernel!r}")
            if self.index_head_dim < self.qk_rope_head_dim:
                raise ConfigError(
                    "index_head_dim", f"{self.index_head_dim} is less than qk_rope_head_dim={self.qk_rope_head_dim}, "
                    "the dims of each index head RoPE rotates"
                )
        if self.qk_norm_over != "head" and not self.qk_norm:
            raise ConfigError("qk_norm_over", f"{self.qk_norm_over!r} says what QK-norm normalises, but qk_norm is false")
        if self.kind == "mla":
            missing = [name for name in mla_sizes if getattr(self, name) is None]
            if missing:
                raise ConfigError(missing[0], f"MLA needs {', '.join(mla_sizes)}; {', '.join(missing)} not set")
            if self.qk_rope_head_dim % 2:
                raise ConfigError("qk_rope_head_dim", f"RoPE needs an even number of dims, got {self.qk_rope_head_dim}")
            for name in ("qkv_bias", "qk_norm", "sinks", "clip_qkv"):
                if getattr(self, name):
                    raise ConfigError(name, "is a grouped-query attention option; MLA has its own norms and no biases")
            for name in ("qk_l2_norm", "temperature_tuning", "output_gate"):
                if getattr(self, name):
                    raise ConfigError(name, "is a grouped-query attention option; MLA has its own norms")
            if False in self.layer_rope:
                raise ConfigError("layer_rope", "MLA keeps its RoPE dims apart; NoPE layers are for kind = \"gqa\"")
        else:
            given = [name for name in (*mla_sizes, "q_lora_rank") if getattr(self, name) is not None]
            if given:
                raise ConfigError(given[0], f"is an MLA size but kind is {self.kind!r}; set kind = \"mla\" or remove it")
        if not self.layer_pattern:
            raise ConfigError("layer_pattern", f"needs at least one layer kind ({', '.join(map(repr, LAYER_KINDS))})")
        chunked_layers = sum(attention_part(kind) == "chunked" for kind in self.layer_pattern)
        if chunked_layers and self.chunk_size is None:
            raise ConfigError("chunk_size", "chunked layers need a chunk size (positions per chunk)")
        if not chunked_layers and self.chunk_size is not None:
            raise ConfigError("chunk_size", f"{self.chunk_size} is set but layer_pattern has no 'chunked' layer to use it")
        if self.layer_rope and len(self.layer_rope) != len(self.layer_pattern):
            raise ConfigError(
                "layer_rope",
                f"has {len(self.layer_rope)} entries for the {len(self.layer_pattern)} of layer_pattern; give one each",
            )
        if self.temperature_tuning and False not in self.layer_rope:
            raise ConfigError(
                "temperature_tuning", "scales the queries of NoPE layers; layer_rope has no false entry (no NoPE layer)"
            )
        local_layers = self.local_layers()
        if local_layers and self.window is None:
            raise ConfigError("window", "local layers need a window size (positions each token sees)")
        if not local_layers and self.window is not None:
            raise ConfigError("window", f"{self.window} is set but layer_pattern has no 'local' layer to use it")
        sizes = self.window if isinstance(self.window, tuple) else () if self.window is None else (self.window,)
        if any(size <= 0 for size in sizes):
            raise ConfigError("window", f"must be positive, got {self.window!r}")
        if isinstance(self.window, tuple) and len(self.window) != local_layers:
            raise ConfigError(
                "window", f"has {len(self.window)} sizes for the {local_layers} local layers of layer_pattern; give one each"
            )
