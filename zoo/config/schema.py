"""The config sections: the model (its attention, position and MoE sections in their own
modules), training, data and the device mesh.

A field typed `Annotated[str, Names("module:TABLE")]` takes a name from that registry (or
dict), which is the one list of what exists: validation asks it. `Literal` fields list
values nothing else in the code names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Literal

from zoo.config.attention import RECURRENT_LAYERS, AttentionConfig, recurrent_part
from zoo.config.lora import NEEDS_BASE, LoraConfig
from zoo.config.moe import MoEConfig
from zoo.config.position import PositionConfig
from zoo.config.recurrent import GatedDeltaNetConfig, Mamba2Config
from zoo.config.section import ConfigError, Names, Section, require_at_most, require_non_negative, require_positive


DType = Literal["float32", "bfloat16", "float16"]
MAX_LAYERS = 10_000  # the deepest published models have a few hundred layers; more is a typo


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
    ffn_dim: int  # 0: the dense layers have no feed-forward (Mamba-2 models: mixer layers alone)
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
    # linear weights held quantized, for inference (zoo/layers/quantized.py): int8 or fp8 per output
    # channel, w8a8 (int8 weights and per-row int8 inputs), nf4; `python -m zoo.quantize` writes such runs
    quantization: Annotated[str, Names("zoo.layers.quantized:SCHEMES", also=("none",))] = "none"
    scan_layers: bool = True  # False unrolls the layer loop (same parameters)
    remat: Annotated[str, Names("zoo.models.stack:REMAT_POLICIES")] = "none"
    attention: AttentionConfig = dataclasses.field(default_factory=AttentionConfig)
    position: PositionConfig = dataclasses.field(default_factory=PositionConfig)
    moe: MoEConfig | None = None  # mixture-of-experts feed-forwards in some layers
    mamba2: Mamba2Config | None = None  # the "mamba2" layers of attention.layer_pattern
    gated_deltanet: GatedDeltaNetConfig | None = None  # its "gated_deltanet" layers

    def _validate(self):
        require_positive(
            self, "vocab_size", "d_model", "num_layers", "encoder_layers", "num_heads", "num_kv_heads",
            "head_dim", "max_seq_len", "norm_eps", "final_logit_softcap",
        )
        require_non_negative(self, "ffn_dim")
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
        self._validate_mixers()
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
        if self.position.local is not None and not self.attention.local_layers():
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


    def _validate_mixers(self):
        """Each recurrent layer kind of layer_pattern has its section, and each section its layers."""
        pattern = self.attention.layer_pattern
        mixers = {recurrent_part(kind) for kind in pattern}
        for kind in RECURRENT_LAYERS:
            if kind in mixers and getattr(self, kind) is None:
                raise ConfigError(kind, f"attention.layer_pattern has {kind!r} layers; give them a [model.{kind}] table (num_heads, ...)")
            if kind not in mixers and getattr(self, kind) is not None:
                raise ConfigError(kind, f"sizes {kind!r} layers, but attention.layer_pattern {list(pattern)} has none")
            if kind in mixers and self.kind != "decoder":
                raise ConfigError("attention.layer_pattern", f"{kind!r} layers run causally: they are for decoder models, not {self.kind!r}")
        if self.ffn_dim == 0 and self.moe is None and self.block.startswith("parallel"):
            raise ConfigError("ffn_dim", f"0 leaves the {self.block!r} block nothing to run beside its mixer; use pre_norm")


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
    lora: LoraConfig | None = None  # train low-rank adapters on a frozen init_from run instead of every weight

    def _validate(self):
        require_positive(
            self, "steps", "batch_size", "seq_len", "learning_rate", "log_every", "grad_clip", "grad_accumulation",
            "loss_chunk", "eval_every", "eval_batches", "checkpoint_every", "keep_checkpoints",
        )
        require_non_negative(self, "warmup_steps", "weight_decay", "z_loss", "seed")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ConfigError("final_lr_fraction", f"must be in [0, 1], got {self.final_lr_fraction}")
        if self.lora is not None and self.init_from is None:
            raise ConfigError("lora", NEEDS_BASE)
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
