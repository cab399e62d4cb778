"""The config sections: model, attention, positions, training and the device mesh.

A field typed `Annotated[str, Names("module:TABLE")]` takes a name from that registry (or
dict), which is the one list of what exists: validation asks it. `Literal` fields list
values nothing else in the code names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Literal

from zoo.config.section import ConfigError, Names, Section, require_at_most, require_non_negative, require_positive


DType = Literal["float32", "bfloat16", "float16"]
MAX_LAYERS = 10_000  # the deepest published models have a few hundred layers; more is a typo


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
    # Layers repeat this pattern; a "local" layer sees the last `window` positions (Mistral,
    # Gemma 2), a "global" one everything. Its cache is a rolling buffer of `window` slots.
    # `window` is one size for every local layer, or a list with one per local entry.
    layer_pattern: tuple[Literal["global", "local", "chunked"], ...] = ("global",)
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
        return tuple(next(sizes) if kind == "local" else None for kind in self.layer_pattern)

    def layer_chunks(self) -> tuple[int | None, ...]:
        """The chunk size of each entry of layer_pattern (None for unchunked layers)."""
        return tuple(self.chunk_size if kind == "chunked" else None for kind in self.layer_pattern)

    def layer_ropes(self) -> tuple[bool, ...]:
        """Whether each entry of layer_pattern applies RoPE (when the model's positions are RoPE)."""
        return self.layer_rope or (True,) * len(self.layer_pattern)

    def _validate(self):
        mla_sizes = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        index_sizes = ("index_heads", "index_head_dim", "index_top_k")
        require_positive(self, "logit_softcap", "softmax_scale", "q_lora_rank", "clip_qkv", "chunk_size", "temperature_floor", *mla_sizes, *index_sizes)
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
            for name in ("qk_l2_norm", "temperature_tuning"):
                if getattr(self, name):
                    raise ConfigError(name, "is a grouped-query attention option; MLA has its own norms")
            if False in self.layer_rope:
                raise ConfigError("layer_rope", "MLA keeps its RoPE dims apart; NoPE layers are for kind = \"gqa\"")
        else:
            given = [name for name in (*mla_sizes, "q_lora_rank") if getattr(self, name) is not None]
            if given:
                raise ConfigError(given[0], f"is an MLA size but kind is {self.kind!r}; set kind = \"mla\" or remove it")
        if not self.layer_pattern:
            raise ConfigError("layer_pattern", "needs at least one layer kind ('global', 'local' or 'chunked')")
        chunked_layers = self.layer_pattern.count("chunked")
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
        local_layers = self.layer_pattern.count("local")
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


@dataclasses.dataclass(frozen=True, kw_only=True)
class PositionConfig(Section):
    """How token positions reach the model (see zoo/layers/positions.py and rope.py)."""

    kind: Annotated[str, Names("zoo.models.wiring:POSITIONS")] = "rope"
    rope_theta: float = 10_000.0
    rotary_fraction: float = 1.0  # share of each head's dims that RoPE rotates (GPT-NeoX, Phi)
    rope_scaling: Annotated[str, Names("zoo.layers.rope:ROPE_SCALINGS", also=("none",))] = "none"
    scaling_factor: float = 1.0  # how many times the original context the scaling stretches to
    original_max_position: int | None = None  # the context length the model was trained with
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn
    beta_slow: float = 1.0  # yarn
    attention_factor: float | None = None  # yarn: default 0.1 ln(scaling_factor) + 1; longrope: sqrt(1 + ln(s) / ln(L0))
    yarn_truncate: bool = True  # yarn: round the ramp's ends to whole dims (false in gpt-oss)
    # dynamic_ntk, longrope: the length the scaling adapts to: each sequence's own (packed documents
    # each their own), or the longest in the batch, as transformers computes it
    dynamic_length: Literal["sequence", "batch"] = "sequence"
    short_factor: tuple[float, ...] = ()  # longrope: one per rotated pair, up to original_max_position
    long_factor: tuple[float, ...] = ()  # longrope: one per rotated pair, beyond it
    relative_buckets: int = 32  # relative (T5)
    relative_max_distance: int = 128  # relative (T5)
    # The RoPE of the local (windowed) layers of attention.layer_pattern when it differs from the
    # global layers' (Gemma 3: theta 10,000 unscaled, the global ones 1,000,000 with linear scaling
    # 8): a [model.position.local] table of RoPE fields, read in full: a field it leaves out takes
    # its default, not the global layers' value. Unset: every layer rotates alike.
    local: PositionConfig | None = None

    def _validate(self):
        require_positive(
            self, "rope_theta", "original_max_position", "low_freq_factor", "high_freq_factor",
            "beta_fast", "beta_slow", "attention_factor", "relative_buckets", "relative_max_distance",
        )
        if not 0.0 < self.rotary_fraction <= 1.0:
            raise ConfigError("rotary_fraction", f"must be in (0, 1], got {self.rotary_fraction}")
        if self.local is not None:
            if self.kind != "rope":
                raise ConfigError("local", f"sets the RoPE of local layers, but kind is {self.kind!r}; use kind = \"rope\"")
            if self.local.kind != "rope":
                raise ConfigError("local.kind", f"local layers' own positions are RoPE settings; got {self.local.kind!r}")
            if self.local.local is not None:
                raise ConfigError("local.local", "is the local layers' RoPE already; it has no local section of its own")
        if self.rope_scaling == "none":
            return
        if self.kind != "rope":
            raise ConfigError("rope_scaling", f"{self.rope_scaling!r} scales RoPE, but kind is {self.kind!r}")
        if self.scaling_factor < 1.0:
            raise ConfigError("scaling_factor", f"must be >= 1 (it stretches the context), got {self.scaling_factor}")
        if self.rope_scaling in ("dynamic_ntk", "yarn", "llama3", "longrope") and self.original_max_position is None:
            raise ConfigError(
                "original_max_position", f"{self.rope_scaling} scaling needs the context length the model was trained with"
            )
        if self.rope_scaling == "longrope":
            if not self.short_factor or len(self.short_factor) != len(self.long_factor):
                raise ConfigError(
                    "short_factor", "longrope needs short_factor and long_factor, one value per rotated pair of dims each"
                )
            if min(self.short_factor + self.long_factor) <= 0:
                raise ConfigError("long_factor", "longrope's factors divide the frequencies: each must be > 0")
        if self.rope_scaling == "yarn" and self.beta_fast <= self.beta_slow:
            raise ConfigError("beta_fast", f"must exceed beta_slow={self.beta_slow}, got {self.beta_fast}")
        if self.rope_scaling == "llama3" and self.high_freq_factor < self.low_freq_factor:
            raise ConfigError(
                "high_freq_factor", f"must be at least low_freq_factor={self.low_freq_factor}, got {self.high_freq_factor}"
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MoEConfig(Section):
    """Mixture-of-experts feed-forwards (see zoo/layers/moe): which layers, the router, dispatch, losses."""

    num_experts: int
    top_k: int = 2
    expert_ffn_dim: int
    router: Annotated[str, Names("zoo.layers.moe.router:ROUTERS")] = "softmax"
    renormalize: bool = True  # chosen weights sum to one (Mixtral, DeepSeek-V3)
    num_groups: int = 1  # group-limited routing (DeepSeek): tokens first pick top_groups of num_groups
    top_groups: int = 1
    routed_scale: float = 1.0  # routed output multiplier (DeepSeek-V3: 2.5)
    capacity_factor: float | None = None  # None: dropless; else slots per expert = factor x even share
    shared_ffn_dim: int = 0  # width of the shared experts every token also passes through (0: none)
    shared_gate: bool = False  # the shared experts' output times sigmoid(x W), W [D, 1] (Qwen2-MoE)
    every: int = 1  # every k-th layer (after first_dense) is an MoE layer
    first_dense: int = 0  # the first k layers keep a dense feed-forward
    load_balance_coef: float = 0.01  # Switch/GShard auxiliary loss weight
    z_loss_coef: float = 0.001  # router z-loss weight
    bias_update_rate: float = 0.001  # sigmoid router: loss-free balancing step per training step
    router_bias: bool = False  # a learned bias on the router logits (gpt-oss)
    expert_bias: bool = False  # biases after each expert's gate, up and down projections (gpt-oss)
    # gpt-oss's clamped SwiGLU (a gated silu): (clip(up, +-limit) + 1) * g * sigmoid(alpha * g), g = min(gate, limit)
    swiglu_limit: float | None = None  # None: the plain gated unit
    swiglu_alpha: float = 1.702  # its sigmoid gain (with swiglu_limit)
    weights_on_inputs: bool = False  # the router weight scales the expert's input, not its output (Llama 4; top-1)

    def _validate(self):
        require_positive(self, "num_experts", "top_k", "expert_ffn_dim", "num_groups", "top_groups", "every", "capacity_factor")
        require_positive(self, "swiglu_limit", "swiglu_alpha")
        require_non_negative(self, "shared_ffn_dim", "first_dense", "load_balance_coef", "z_loss_coef", "bias_update_rate")
        if self.top_k > self.num_experts:
            raise ConfigError("top_k", f"{self.top_k} exceeds num_experts={self.num_experts}")
        if self.router == "switch" and self.top_k != 1:
            raise ConfigError("top_k", f"the switch router sends each token to one expert; got top_k={self.top_k}")
        if self.weights_on_inputs and (self.top_k != 1 or self.router == "expert_choice"):
            raise ConfigError(
                "weights_on_inputs", f"scales each token's one expert input: it needs top_k=1 token choice, not {self.router} top_k={self.top_k}"
            )
        if self.num_experts % self.num_groups:
            raise ConfigError("num_groups", f"{self.num_experts} experts do not split into {self.num_groups} equal groups")
        if self.top_groups > self.num_groups:
            raise ConfigError("top_groups", f"{self.top_groups} exceeds num_groups={self.num_groups}")
        if self.top_k > self.top_groups * (self.num_experts // self.num_groups):
            raise ConfigError("top_k", f"{self.top_k} exceeds the {self.top_groups} groups' experts a token may use")
        if self.shared_gate and not self.shared_ffn_dim:
            raise ConfigError("shared_gate", "gates the shared experts; set shared_ffn_dim to their width")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig(Section):
    """A transformer language model. Implied sizes are resolved on construction:
    `num_kv_heads` defaults to `num_heads` (MHA), `head_dim` to `d_model // num_heads`."""

    kind: Annotated[str, Names("zoo.models.model:ARCHITECTURES")] = "decoder"
    vocab_size: int
    d_model: int
    num_layers: int  # the decoder's in an encoder-decoder
    encoder_layers: int | None = None  # an encoder-decoder's encoder depth (default num_layers)
    num_heads: int
    num_kv_heads: int | None = None
    head_dim: int | None = None
    ffn_dim: int
    ffn_activation: Annotated[str, Names("zoo.layers.mlp:ACTIVATIONS")] = "silu"
    ffn_gated: bool = True  # act(x W_gate) * (x W_up): SwiGLU with silu, GeGLU with gelu
    mlp_bias: bool = False
    norm: Annotated[str, Names("zoo.layers.norms:NORMS")] = "rms"
    norm_eps: float = 1e-6
    block: Literal["pre_norm", "post_norm", "parallel", "parallel_two_norms", "sandwich", "post_sublayer_norm"] = "pre_norm"
    tie_embeddings: bool = False
    embedding_scale: bool = False  # token embeddings times sqrt(d_model) (Gemma)
    embedding_norm: bool = False  # a norm right after the (position-added) embeddings (BLOOM, BERT)
    final_logit_softcap: float | None = None  # cap * tanh(logits / cap) on the output (Gemma 2)
    token_types: int = 0  # rows of a token-type (segment) embedding added to the input (BERT: 2); encoders
    mlm_head: bool = False  # BERT's dense + activation + norm before the output, and an output bias
    max_seq_len: int = 2048
    # Special ids of the vocabulary (a Hugging Face config's bos_token_id / eos_token_id);
    # when unset, the run's tokenizer's. Generation stops at any of eos_ids.
    bos_id: int | None = None
    eos_ids: tuple[int, ...] = ()
    dtype: DType = "float32"  # compute
    param_dtype: DType = "float32"  # storage
    scan_layers: bool = True  # False unrolls the layer loop (same parameters)
    remat: Annotated[str, Names("zoo.models.stack:REMAT_POLICIES")] = "none"
    attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)
    position: PositionConfig = dataclasses.field(default_factory=PositionConfig)
    moe: MoEConfig | None = None  # mixture-of-experts feed-forwards in some layers

    def _validate(self):
        require_positive(
            self, "vocab_size", "d_model", "num_layers", "encoder_layers", "num_heads", "num_kv_heads",
            "head_dim", "ffn_dim", "max_seq_len", "norm_eps", "final_logit_softcap",
        )
        if self.head_dim is None:
            if self.d_model % self.num_heads:
                raise ConfigError(
                    "d_model",
                    f"{self.d_model} is not divisible by num_heads={self.num_heads}; "
                    "pick sizes that divide or set head_dim explicitly",
                )
            object.__setattr__(self, "head_dim", self.d_model // self.num_heads)
        if self.num_kv_heads is None:
            object.__setattr__(self, "num_kv_heads", self.num_heads)
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                "num_kv_heads",
                f"num_heads={self.num_heads} is not divisible by num_kv_heads={self.num_kv_heads}; "
                "each key/value head must serve a whole group of query heads",
            )
        require_non_negative(self, "token_types")
        require_at_most(self, MAX_LAYERS, "num_layers", "encoder_layers", why="the most layers zoo builds")
        for name, ids in (("bos_id", () if self.bos_id is None else (self.bos_id,)), ("eos_ids", self.eos_ids)):
            bad = [i for i in ids if not 0 <= i < self.vocab_size]
            if bad:
                raise ConfigError(name, f"id {bad[0]} is outside the vocabulary of vocab_size={self.vocab_size}")
        for name in ("token_types", "mlm_head"):
            if getattr(self, name) and self.kind != "encoder":
                raise ConfigError(name, f"is a masked-language-model (encoder) option, not for kind {self.kind!r}")
        if self.encoder_layers is not None and self.kind != "encoder_decoder":
            raise ConfigError("encoder_layers", f"is only for encoder_decoder models, not {self.kind!r}")
        if self.kind == "encoder_decoder" and self.block.startswith("parallel"):
            raise ConfigError("block", f"{self.block!r} has no place for cross-attention; use pre_norm or post_norm")
        moe = self.moe
        if moe is not None and moe.router == "expert_choice" and self.kind != "encoder":
            raise ConfigError(
                "moe.router",
                "expert_choice lets experts pick tokens using later ones, which causal decoding cannot; "
                "use it in encoder models",
            )
        if moe is not None and moe.swiglu_limit is not None and (not self.ffn_gated or self.ffn_activation != "silu"):
            raise ConfigError(
                "moe.swiglu_limit",
                "the clamped SwiGLU is a gated silu; set ffn_gated = true and ffn_activation = \"silu\" "
                f"(got {self.ffn_gated}, {self.ffn_activation!r})",
            )
        first = 0 if moe is None else moe.first_dense
        period = math.lcm(len(self.attention.layer_pattern), 1 if moe is None else moe.every)
        for name in ("num_layers", "encoder_layers"):
            layers = getattr(self, name)
            if layers is not None and (layers <= first or (layers - first) % period):
                raise ConfigError(
                    name,
                    f"{layers} layers (after {first} first dense ones) do not repeat the period of {period} layers set "
                    f"by attention.layer_pattern {list(self.attention.layer_pattern)}"
                    + ("" if moe is None else f" and moe.every={moe.every}"),
                )
        if self.position.local is not None and "local" not in self.attention.layer_pattern:
            raise ConfigError(
                "position.local",
                f"is the RoPE of local layers, but attention.layer_pattern {list(self.attention.layer_pattern)} has none",
            )
        for name in ("layer_rope", "qk_l2_norm"):
            if getattr(self.attention, name) and self.position.kind != "rope":
                raise ConfigError(f"attention.{name}", f"acts on RoPE layers, but position.kind is {self.position.kind!r}")
        rope_head = self.attention.qk_rope_head_dim if self.attention.kind == "mla" else self.head_dim
        for key, position in (("position", self.position), ("position.local", self.position.local)):
            if position is None or position.kind != "rope":
                continue
            rotary_dims = int(rope_head * position.rotary_fraction)
            if rotary_dims < 2 or rotary_dims % 2:
                raise ConfigError(
                    f"{key}.rotary_fraction",
                    f"{position.rotary_fraction} of a {rope_head}-dim rotary head gives {rotary_dims} "
                    "rotary dims; RoPE needs an even number >= 2",
                )
            if position.rope_scaling == "longrope" and len(position.short_factor) != rotary_dims // 2:
                raise ConfigError(
                    f"{key}.short_factor",
                    f"longrope needs one short and one long factor per rotated pair: {rotary_dims // 2} each for "
                    f"{rotary_dims} rotary dims, got {len(position.short_factor)}",
                )


@dataclasses.dataclass(frozen=True, kw_only=True)
class MeshConfig(Section):
    """Device mesh axis sizes; one axis may be -1, meaning all devices not used by the others."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1
    expert: int = 1

    def _validate(self):
        sizes = dataclasses.asdict(self)
        for name, size in sizes.items():
            if size == 0 or size < -1:
                raise ConfigError(name, f"must be a positive size or -1 (the rest), got {size}")
        if sum(size == -1 for size in sizes.values()) > 1:
            raise ConfigError("data", "at most one mesh axis may be -1")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainConfig(Section):
    """The optimisation run: batch shape, schedule, loss options, logging and checkpoints."""

    steps: int = 300
    batch_size: int = 16  # rows per step over all devices and accumulation micro-steps
    seq_len: int = 128
    learning_rate: float = 3e-3
    warmup_steps: int = 30
    decay: Literal["cosine", "linear"] = "cosine"
    final_lr_fraction: float = 0.1  # the learning rate at the last step, as a share of the peak
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    grad_accumulation: int = 1  # micro-batches per step; batch_size must divide by it
    z_loss: float = 0.0  # weight of mean(log(sum(exp(logits)))^2), keeps logits from drifting
    loss_chunk: int = 4096  # tokens per chunk of the output projection, so [B, T, V] never all exists
    seed: int = 0
    log_every: int = 10
    eval_every: int = 100
    eval_batches: int = 4
    checkpoint_every: int = 100
    keep_checkpoints: int = 3
    init_from: str | None = None  # a run directory (train.py's or an import) whose params start a new run

    def _validate(self):
        require_positive(
            self, "steps", "batch_size", "seq_len", "learning_rate", "log_every", "grad_clip", "grad_accumulation",
            "loss_chunk", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints",
        )
        require_non_negative(self, "warmup_steps", "weight_decay", "z_loss", "seed")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ConfigError("final_lr_fraction", f"must be in [0, 1], got {self.final_lr_fraction}")
        if self.batch_size % self.grad_accumulation:
            raise ConfigError(
                "grad_accumulation",
                f"batch_size={self.batch_size} does not split into {self.grad_accumulation} equal micro-batches",
            )


@dataclasses.dataclass(frozen=True, kw_only=True)
class DataConfig(Section):
    """Where training text comes from.

    stdlib: the running Python's standard-library sources (no download). text: files or
    globs, one document per file. jsonl: one document per line, from `text_field`.
    tokens: pre-tokenised ids, .npy or flat binary of `token_dtype`, memory-mapped;
    documents end at `document_end_id` when given.
    """

    source: Literal["stdlib", "text", "jsonl", "tokens"] = "stdlib"
    paths: tuple[str, ...] = ()
    text_field: str = "text"
    token_dtype: Literal["uint16", "int32", "uint32"] = "uint16"
    document_end_id: int | None = None
    tokenizer: str | None = None  # a sentencepiece model to use instead of training one
    eval_fraction: float = 0.01  # held-out share of rows (at least train.eval_batches batches)

    def _validate(self):
        if self.source == "stdlib" and self.paths:
            raise ConfigError("paths", "the stdlib source reads no files; set source to text, jsonl or tokens")
        if self.source != "stdlib" and not self.paths:
            raise ConfigError("paths", f"source {self.source!r} needs at least one file or glob")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError("eval_fraction", f"must be in [0, 1), got {self.eval_fraction}")
        require_non_negative(self, "document_end_id")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(Section):
    """Everything a run needs: the model, how it is trained, and the device mesh."""

    model: ModelConfig
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def _validate(self):
        moe = self.model.moe
        if moe is not None and self.mesh.expert > 1 and moe.num_experts % self.mesh.expert:
            raise ConfigError(
                "mesh.expert", f"{self.model.moe.num_experts} experts do not divide over {self.mesh.expert} devices"
            )
        if self.train.seq_len > self.model.max_seq_len:
            raise ConfigError(
                "train.seq_len",
                f"{self.train.seq_len} exceeds model.max_seq_len={self.model.max_seq_len}",
            )
