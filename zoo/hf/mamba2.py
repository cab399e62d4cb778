"""Mamba-2 (Mamba2ForCausalLM): layers of RMSNorm and a Mamba-2 mixer alone (no feed-forward,
no positions), its input projection fused as z | x | B | C | dt and its convolution over the
channels x | B | C."""

from __future__ import annotations

import math

from zoo.config import ModelConfig
from zoo.hf import family as shared
from zoo.hf.family import Family
from zoo.hf.fields import Fields
from zoo.hf.mapping import HFConfigError, Layout, LayerRules, Path, Rule, heads_out, same, side_by_side, transposed

NO_LIMIT = 2**20  # max_seq_len of a model whose layers have no positions and no context limit of their own


# [model.mamba2] field -> its config.json name, in Mamba2ForCausalLM and in the hybrids' configs (mamba_ prefixed)
NAMES = {
    "num_heads": "num_heads", "head_dim": "head_dim", "state_dim": "state_size", "groups": "n_groups",
    "conv_width": "conv_kernel", "conv_bias": "use_conv_bias", "bias": "use_bias", "scan_chunk": "chunk_size",
}
HYBRID_NAMES = {
    "num_heads": "mamba_n_heads", "head_dim": "mamba_d_head", "state_dim": "mamba_d_state", "groups": "mamba_n_groups",
    "conv_width": "mamba_d_conv", "conv_bias": "mamba_conv_bias", "bias": "mamba_proj_bias", "scan_chunk": "mamba_chunk_size",
}


def mixer_sizes(hf: Fields, names: dict[str, str], inner: int) -> dict:
    """[model.mamba2] from a config's mixer fields (`names`: NAMES or HYBRID_NAMES; `inner`:
    the width heads x head_dim must fill, expand x hidden_size)."""
    num_heads = hf.int(names["num_heads"])
    width = inner // num_heads if hf.value(names["head_dim"]) == "auto" else hf.int(names["head_dim"])  # Bamba's "auto"
    if num_heads * width != inner:
        raise HFConfigError(
            f"config.json: {names['num_heads']}={num_heads} x {names['head_dim']}={width} is not the mixer's width {inner}"
        )
    if shared.activation(hf.str("hidden_act", "silu")) != "silu":
        raise HFConfigError(f"config.json: hidden_act={hf.str('hidden_act')!r}; Mamba-2's gates and convolution use silu")
    low, high = _limit(hf.value("time_step_limit"))
    sizes = {"num_heads": num_heads, "head_dim": width, "dt_limit": [] if (low, high) == (0.0, math.inf) else [low, high]}
    for ours in ("state_dim", "groups", "conv_width", "scan_chunk"):
        sizes[ours] = hf.int(names[ours])
    for ours in ("conv_bias", "bias"):
        sizes[ours] = hf.bool(names[ours])
    if hf.has("time_step_min") or hf.has("time_step_max"):
        sizes["dt_init"] = [hf.float("time_step_min", 1e-3), hf.float("time_step_max", 0.1)]
    return sizes


def _limit(value) -> tuple[float, float]:
    """time_step_limit [low, high], where high may be infinite (no clamp above), read as (low, high)."""
    if value is None:
        return 0.0, math.inf
    # transformers 5 saves an infinite float as {"__float__": "Infinity"}
    number = lambda v: float(v["__float__"]) if isinstance(v, dict) and set(v) == {"__float__"} else v
    value = [number(v) for v in value] if isinstance(value, list) else value
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)):
        raise HFConfigError(f"config.json: time_step_limit must be [low, high], not {value!r}")
    low, high = map(float, value)
    if high == math.inf and low != 0.0:
        raise HFConfigError(f"config.json: time_step_limit {value} clamps below only; zoo clamps both ends or neither")
    return low, high


def mixer_fields(model: ModelConfig, names: dict[str, str], output_norms: tuple[str, ...] = ("gate_first",)) -> dict:
    """A config's mixer fields for [model.mamba2] (`names`: NAMES or HYBRID_NAMES), in a family
    whose mixers end with one of `output_norms` (Mamba2's and Bamba's: gate first)."""
    sizes = model.mamba2
    if sizes.output_norm not in output_norms:
        raise HFConfigError(f"its Mamba-2 output_norm is {sizes.output_norm!r}; this family's is {' or '.join(map(repr, output_norms))}")
    fields = {theirs: getattr(sizes, ours) for ours, theirs in names.items()}
    return fields | {"time_step_limit": list(sizes.dt_limit) or [0.0, math.inf], "hidden_act": "silu"}


def mixer_rules(config: ModelConfig, prefix: str, at: Path = ("attention",)) -> list[Rule]:
    """The rules of one Mamba-2 mixer whose tensors are named `prefix` + in_proj, conv1d, ...:
    zoo's mixer is the block's param path `at` (its `attention`, or within a ParallelMixers)."""
    sizes = config.mamba2
    heads, width, bc = (sizes.num_heads, sizes.head_dim), sizes.num_heads * sizes.head_dim, sizes.groups * sizes.state_dim
    mixer = lambda *path: (*at, *path)
    projections = ("z", "x", "B", "C", "dt")
    shapes = [heads, heads, (sizes.groups, sizes.state_dim), (sizes.groups, sizes.state_dim), (sizes.num_heads,)]
    rules = [
        side_by_side(prefix + "in_proj.weight", tuple(mixer(p, "weight") for p in projections), shapes),
        conv_channels(prefix + "conv1d.weight", tuple(mixer(f"conv_{c}", "weight") for c in "xBC"), (width, bc, bc)),
        same(prefix + "dt_bias", mixer("dt_bias")),
        same(prefix + "A_log", mixer("A_log")),
        same(prefix + "D", mixer("D")),
        heads_out(prefix + "out_proj.weight", mixer("out_proj", "weight"), *heads),
    ]
    if sizes.output_norm != "none":
        rules.append(same(prefix + "norm.weight", mixer("norm", "scale")))
    if sizes.conv_bias:
        rules.append(side_by_side(prefix + "conv1d.bias", tuple(mixer(f"conv_{c}", "bias") for c in "xBC"), [(width,), (bc,), (bc,)]))
    if sizes.bias:
        rules += [
            side_by_side(prefix + "in_proj.bias", tuple(mixer(p, "bias") for p in projections), shapes),
            same(prefix + "out_proj.bias", mixer("out_proj", "bias")),
        ]
    return rules


def conv_channels(hf: str, zoo: tuple[tuple[str, ...], ...], widths: tuple[int, ...]) -> Rule:
    """A depthwise Conv1d weight [C, 1, W] over channels that are several convolutions' side by
    side <-> zoo's [W, C_i] each."""
    split = side_by_side(hf, zoo, [(w,) for w in widths])
    return Rule(hf, zoo, lambda w: split.to_zoo(w[:, 0]), lambda *parts: split.to_hf(*parts)[:, None])


def read(hf: Fields) -> dict:
    hidden = hf.int("hidden_size")
    sizes = mixer_sizes(hf, NAMES, hf.int("expand") * hidden)
    return {
        "vocab_size": hf.int("vocab_size"), "d_model": hidden, "num_layers": hf.int("num_hidden_layers"),
        "num_heads": sizes["num_heads"], "head_dim": sizes["head_dim"], "ffn_dim": 0, "norm": "rms",
        "norm_eps": hf.float("layer_norm_epsilon", 1e-5), "tie_embeddings": hf.bool("tie_word_embeddings", False),
        "max_seq_len": NO_LIMIT, "position": {"kind": "none"}, "attention": {"layer_pattern": ["mamba2"]}, "mamba2": sizes,
        **shared.dtypes(hf),
    }


def write(model: ModelConfig) -> dict:
    if model.mamba2 is None:
        raise HFConfigError("it has no Mamba-2 layers")
    width = model.mamba2.num_heads * model.mamba2.head_dim
    if width % model.d_model:
        raise HFConfigError(f"Mamba-2's width {width} is not a whole multiple (expand) of d_model={model.d_model}")
    return {
        "vocab_size": model.vocab_size, "hidden_size": model.d_model, "num_hidden_layers": model.num_layers,
        "num_heads": model.mamba2.num_heads, "head_dim": model.mamba2.head_dim, "expand": width // model.d_model,
        "layer_norm_epsilon": model.norm_eps, "tie_word_embeddings": model.tie_embeddings, **mixer_fields(model, NAMES),
        "time_step_min": model.mamba2.dt_init[0], "time_step_max": model.mamba2.dt_init[1],
    }


def layout(config: ModelConfig, hf: Fields | None = None) -> Layout:
    top = [
        same("backbone.embeddings.weight", ("embedder", "embedding", "table")),
        same("backbone.norm_f.weight", ("tower", "final_norm", "scale")),
    ]
    if not config.tie_embeddings:
        top.append(transposed("lm_head.weight", ("head", "unembed", "weight")))
    p = "backbone.layers.{layer}."
    rules = [same(p + "norm.weight", ("attention_norm", "scale")), *mixer_rules(config, p + "mixer.")]
    return Layout(tuple(top), (LayerRules("tower", config.num_layers, lambda spec: rules),))


DEFAULTS = {  # transformers' defaults
    "bos_token_id": 0, "eos_token_id": 2, "num_heads": 128, "head_dim": 64, "expand": 2, "state_size": 128, "n_groups": 8,
    "conv_kernel": 4, "use_bias": False,
    "use_conv_bias": True, "hidden_act": "silu", "layer_norm_epsilon": 1e-5, "time_step_min": 0.001, "time_step_max": 0.1,
    "tie_word_embeddings": False, "chunk_size": 256,
}
# initialisation, and residual_in_fp32 (float32 sums of bfloat16 layers; zoo's residual stream is at the compute dtype)
INERT = frozenset({"time_step_rank", "time_step_floor", "rescale_prenorm_residual", "residual_in_fp32"})
FAMILIES = (Family("mamba2", "Mamba2ForCausalLM", read, write, layout, INERT, DEFAULTS),)
