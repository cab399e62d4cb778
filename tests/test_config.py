"""Configs: loading, inheritance, overrides, and a clear error for every kind of bad value."""

import dataclasses
import subprocess
import sys
import typing

import pytest

from zoo import config
from zoo.config import ConfigError, Names

BASE_MODEL = dict(vocab_size=100, d_model=64, num_layers=2, num_heads=4, ffn_dim=128)


def build(**model):
    return config.from_dict({"model": {**BASE_MODEL, **model}})


def test_tiny_loads_with_resolved_sizes():
    cfg = config.load("tiny")
    assert cfg.model.head_dim == cfg.model.d_model // cfg.model.num_heads
    assert cfg.model.num_heads % cfg.model.num_kv_heads == 0
    assert cfg.train.seq_len <= cfg.model.max_seq_len


def test_implied_sizes():
    cfg = build()
    assert cfg.model.num_kv_heads == 4 and cfg.model.head_dim == 16
    assert build(head_dim=24, num_kv_heads=1).model.head_dim == 24


def test_inheritance_and_cli_overrides(tmp_path):
    (tmp_path / "parent.toml").write_text(
        '[model]\nvocab_size = 100\nd_model = 64\nnum_layers = 2\nnum_heads = 4\nffn_dim = 128\n'
        '[model.attention]\nqk_norm = true\n[train]\nsteps = 7\n'
    )
    (tmp_path / "child.toml").write_text('base = "parent"\n[model]\nd_model = 128\n')
    cfg = config.load(tmp_path / "child.toml", ["model.num_layers=3", "model.norm=layer", "train.learning_rate=1e-4"])
    assert cfg.model.d_model == 128 and cfg.model.head_dim == 32  # implied size follows the child
    assert cfg.model.attention.qk_norm and cfg.train.steps == 7  # inherited, nested tables too
    assert cfg.model.num_layers == 3 and cfg.model.norm == "layer" and cfg.train.learning_rate == 1e-4


def test_code_override_and_toml_round_trip(tmp_path):
    cfg = config.override(config.load("tiny"), {"model.num_layers": 1, "model.attention.logit_softcap": 30})
    assert cfg.model.num_layers == 1 and cfg.model.attention.logit_softcap == 30.0
    path = tmp_path / "resolved.toml"
    path.write_text(config.to_toml(cfg))
    assert config.load(path) == cfg
    assert config.load(path, ["model.attention.logit_softcap=none"]).model.attention.logit_softcap is None


def test_configs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        build().model.d_model = 3


@pytest.mark.parametrize(
    "model, message",
    [
        (dict(num_head=4), "model.num_head: unknown key (did you mean 'num_heads'?)"),
        (dict(d_model="big"), "model.d_model: expected an integer, got 'big'"),
        (dict(num_layers=2.5), "model.num_layers: expected an integer, got 2.5"),
        (dict(tie_embeddings="yes"), "model.tie_embeddings: expected true or false, got 'yes'"),
        (dict(norm_eps="small"), "model.norm_eps: expected a number, got 'small'"),
        (dict(d_model=100, num_heads=3), "model.d_model: 100 is not divisible by num_heads=3"),
        (dict(num_heads=8, num_kv_heads=3), "model.num_kv_heads: num_heads=8 is not divisible by num_kv_heads=3"),
        (dict(num_layers=0), "model.num_layers: must be positive, got 0"),
        (dict(ffn_dim=-5), "model.ffn_dim: must be >= 0, got -5"),
        (dict(head_dim=0), "model.head_dim: must be positive, got 0"),
        (dict(norm="batch"), "model.norm: 'batch' is not allowed; allowed: "),
        (dict(block="pre-norm"), "model.block: 'pre-norm' is not allowed (did you mean 'pre_norm'?)"),
        (dict(remat="some"), "model.remat: 'some' is not allowed; allowed: "),
        (dict(dtype="float8"), "model.dtype: 'float8' is not allowed"),
        (dict(attention=dict(kernel="flash")), "model.attention.kernel: 'flash' is not allowed; allowed: "),
        (dict(attention=dict(logit_softcap=-1.0)), "model.attention.logit_softcap: must be positive, got -1.0"),
        (dict(attention=dict(logit_softcap="high")), "logit_softcap: expected a number, got 'high' (or unset)"),
        (dict(attention=dict(qk_norms=True)), "model.attention.qk_norms: unknown key (did you mean 'qk_norm'?)"),
        (dict(attention=3), "model.attention: expected a [attention] table, got 3"),
        (dict(attention=dict(qk_norm_over="projection")), "model.attention.qk_norm_over: 'projection' says what QK-norm normalises, but qk_norm is false"),
        (dict(attention=dict(qk_norm=True, qk_norm_over="heads")), "model.attention.qk_norm_over: 'heads' is not allowed (did you mean 'head'?)"),
        (dict(attention=dict(clip_qkv=0.0)), "model.attention.clip_qkv: must be positive, got 0.0"),
        (dict(attention=dict(layer_pattern=["local"])), "model.attention.window: local layers need a window size"),
        (dict(attention=dict(window=8)), "model.attention.window: 8 is set but layer_pattern has no 'local' layer"),
        (dict(attention=dict(layer_pattern=["local", "dense"], window=8)), "model.attention.layer_pattern[1]: 'dense' is not allowed"),
        (dict(attention=dict(layer_pattern=[])), "model.attention.layer_pattern: needs at least one layer kind"),
        (dict(attention=dict(window=0, layer_pattern=["local"])), "model.attention.window: must be positive, got 0"),
        (
            dict(attention=dict(window=[4, 8], layer_pattern=["local", "global"])),
            "model.attention.window: has 2 sizes for the 1 local layers of layer_pattern; give one each",
        ),
        (dict(num_layers=3, attention=dict(layer_pattern=["local", "global"], window=8)), "model.num_layers: 3 layers (after 0 first dense ones) do not repeat the period of 2 layers"),
        (dict(attention=dict(kind="mla", kv_lora_rank=8)), "model.attention.qk_nope_head_dim: MLA needs kv_lora_rank"),
        (dict(attention=dict(kv_lora_rank=8)), "model.attention.kv_lora_rank: is an MLA size but kind is 'gqa'"),
        (
            dict(attention=dict(kind="mla", kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=3, v_head_dim=8)),
            "model.attention.qk_rope_head_dim: RoPE needs an even number of dims, got 3",
        ),
        (
            dict(attention=dict(kind="mla", kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, qk_norm=True)),
            "model.attention.qk_norm: is a grouped-query attention option",
        ),
        (dict(position=dict(kind="rotary")), "model.position.kind: 'rotary' is not allowed; allowed: "),
        (dict(position=dict(rotary_fraction=1.5)), "model.position.rotary_fraction: must be in (0, 1], got 1.5"),
        (dict(position=dict(rotary_fraction=0.03)), "model.position.rotary_fraction: 0.03 of a 16-dim rotary head gives 0"),
        (dict(position=dict(rope_theta=0)), "model.position.rope_theta: must be positive, got 0.0"),
        (dict(moe=dict(num_experts=4, top_k=5, expert_ffn_dim=8)), "model.moe.top_k: 5 exceeds num_experts=4"),
        (dict(moe=dict(num_experts=4, expert_ffn_dim=8, router="hash")), "model.moe.router: 'hash' is not allowed; allowed: "),
        (dict(moe=dict(num_experts=4, top_k=2, expert_ffn_dim=8, router="switch")), "model.moe.top_k: the switch router sends each token to one expert; got top_k=2"),
        (dict(moe=dict(num_experts=6, expert_ffn_dim=8, num_groups=4)), "model.moe.num_groups: 6 experts do not split into 4 equal groups"),
        (dict(moe=dict(num_experts=8, top_k=4, expert_ffn_dim=8, num_groups=4, top_groups=1)), "model.moe.top_k: 4 exceeds the 1 groups' experts a token may use"),
        (dict(moe=dict(num_experts=4, expert_ffn_dim=8, capacity_factor=0.0)), "model.moe.capacity_factor: must be positive, got 0.0"),
        (dict(moe=dict(num_experts=4, expert_ffn_dim=8, router="expert_choice")), "expert_choice lets experts pick tokens using later ones"),
        (dict(moe=dict(num_experts=4)), "model.moe.expert_ffn_dim: is required but not set"),
        (dict(moe=dict(num_experts=4, expert_ffn_dim=8, shared_gate=True)), "model.moe.shared_gate: gates the shared experts; set shared_ffn_dim"),
        (dict(attention=dict(index_top_k=4)), "model.attention.index_heads: sparse attention needs index_heads, index_head_dim, index_top_k; index_heads, index_head_dim not set"),
        (dict(attention=dict(index_heads=2, index_head_dim=8, index_top_k=4)), "model.attention.index_top_k: sparse attention's indexer reads MLA's query latent"),
        (dict(attention=dict(kind="mla", kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, q_lora_rank=8, index_heads=2, index_head_dim=2, index_top_k=4)), "model.attention.index_head_dim: 2 is less than qk_rope_head_dim=4"),
        (dict(attention=dict(kind="mla", kv_lora_rank=8, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=8, q_lora_rank=8, index_heads=2, index_head_dim=8, index_top_k=4, kernel="chunked")), "model.attention.kernel: sparse attention's key selection runs on the 'xla' kernel, not 'chunked'"),
        (dict(moe=dict(num_experts=4, expert_ffn_dim=8, swiglu_limit=-1.0)), "model.moe.swiglu_limit: must be positive, got -1.0"),
        (
            dict(ffn_activation="gelu", moe=dict(num_experts=4, expert_ffn_dim=8, swiglu_limit=7.0)),
            "model.moe.swiglu_limit: the clamped SwiGLU is a gated silu; set ffn_gated = true and ffn_activation = \"silu\" (got True, 'gelu')",
        ),
    ],
)
def test_bad_model_values_name_key_value_and_allowed(model, message):
    with pytest.raises(ConfigError) as error:
        build(**model)
    assert message in str(error.value)


def registered_names():
    """Each config key that names a registered variant, and what its registry (or table) holds."""
    from zoo.layers import ACTIVATIONS, KERNELS, NORMS
    from zoo.layers.moe.router import ROUTERS
    from zoo.models.wiring import POSITIONS
    from zoo.layers.rope import ROPE_SCALINGS
    from zoo.models import ARCHITECTURES
    from zoo.models.wiring import ATTENTION
    from zoo.models.stack import REMAT_POLICIES

    return {
        "model.kind": ARCHITECTURES.names(),
        "model.norm": NORMS.names(),
        "model.ffn_activation": ACTIVATIONS.names(),
        "model.remat": tuple(REMAT_POLICIES),
        "model.attention.kind": ATTENTION.names(),
        "model.attention.kernel": KERNELS.names(),
        "model.position.kind": POSITIONS.names(),
        "model.position.rope_scaling": ("none", *ROPE_SCALINGS.names()),
        "model.moe.router": ROUTERS.names(),
    }


def test_a_bad_name_lists_exactly_what_the_registry_holds():
    moe = {"model.moe.num_experts": 4, "model.moe.expert_ffn_dim": 8}
    for key, names in registered_names().items():
        assert names, key
        with pytest.raises(ConfigError) as error:
            config.load("tiny", moe | {key: "bogus"})
        assert str(error.value) == f"{key}: 'bogus' is not allowed; allowed: {', '.join(map(repr, names))}"


def test_every_registry_name_field_finds_its_table_and_default():
    """A Names marker whose table moved or was renamed fails here, not at a user's first load."""
    sections = [getattr(config, name) for name in config.__all__ if name.endswith("Config") and name != "ConfigError"]
    for section in sections:
        for name, hint in typing.get_type_hints(section, include_extras=True).items():
            marks = [m for m in getattr(hint, "__metadata__", ()) if isinstance(m, Names)]
            for mark in marks:
                default = next(f.default for f in dataclasses.fields(section) if f.name == name)
                assert default in mark.allowed(), f"{section.__name__}.{name}: {default!r} not in {mark.table}"


def test_validation_asks_the_table_when_it_validates(monkeypatch):
    """A name added to the table is accepted without touching the config schema."""
    from zoo.layers import norms
    from zoo.models import stack
    from zoo.registry import Registry

    with pytest.raises(ConfigError, match="'everything_but_dots' is not allowed"):
        build(remat="everything_but_dots")
    monkeypatch.setitem(stack.REMAT_POLICIES, "everything_but_dots", None)
    assert build(remat="everything_but_dots").model.remat == "everything_but_dots"

    more = Registry("norm")
    for name in norms.NORMS:
        more.register(name)(norms.NORMS.get(name))
    more.register("scale")(norms.NORMS.get("rms"))
    monkeypatch.setattr(norms, "NORMS", more)
    assert build(norm="scale").model.norm == "scale"
    with pytest.raises(ConfigError) as error:
        build(norm="batch")
    assert str(error.value).endswith(f"allowed: {', '.join(map(repr, more.names()))}") and "'scale'" in str(error.value)


def test_an_optional_name_keeps_a_registered_none():
    """`--set key=none` clears an optional value, unless "none" is one of the names it takes."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Run(config.Section):
        remat: typing.Annotated[str, Names("zoo.models.stack:REMAT_POLICIES")] | None = None

    assert Run.from_dict({"remat": "none"}).remat == "none" and Run().remat is None
    with pytest.raises(ConfigError, match="remat: 'some' is not allowed; allowed: 'none', .* \\(or unset\\)"):
        Run.from_dict({"remat": "some"})


def test_importing_the_config_imports_no_layers():
    """The registries are imported when a value is checked, so zoo.config stays light (and acyclic)."""
    script = "import sys, zoo.config; print(sorted(m for m in sys.modules if m.startswith(('zoo.layers', 'zoo.models', 'jax'))))"
    assert subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout == "[]\n"


def test_missing_required_key():
    with pytest.raises(ConfigError, match="model.vocab_size: is required but not set"):
        config.from_dict({"model": {k: v for k, v in BASE_MODEL.items() if k != "vocab_size"}})


@pytest.mark.parametrize(
    "data, message",
    [
        ({"optim": {}}, "optim: unknown key; allowed: model, train, data, mesh"),
        ({"train": {"seq_len": 4096}}, "train.seq_len: 4096 exceeds model.max_seq_len=2048"),
        ({"train": {"warmup_steps": -1}}, "train.warmup_steps: must be >= 0, got -1"),
        ({"train": {"batch_size": 0}}, "train.batch_size: must be positive, got 0"),
        ({"mesh": {"data": -1, "fsdp": -1}}, "mesh.data: at most one mesh axis may be -1"),
        ({"mesh": {"tensor": 0}}, "mesh.tensor: must be a positive size or -1 (the rest), got 0"),
        (
            {"model": BASE_MODEL | {"moe": {"num_experts": 6, "expert_ffn_dim": 8}}, "mesh": {"expert": 4}},
            "mesh.expert: 6 experts do not divide over 4 devices",
        ),
    ],
)
def test_bad_run_values(data, message):
    with pytest.raises(ConfigError) as error:
        config.from_dict({"model": BASE_MODEL} | data)
    assert message in str(error.value)


def test_bad_files_and_overrides(tmp_path):
    with pytest.raises(ConfigError, match="no config file 'nonexistent'; known configs: .*tiny"):
        config.load("nonexistent")
    with pytest.raises(ConfigError, match="no config file 'hybrid_tiny' \\(did you mean 'hybrid-tiny'\\?\\); known configs"):
        config.load("hybrid_tiny")
    (tmp_path / "a.toml").write_text('base = "b"\n')
    (tmp_path / "b.toml").write_text('base = "a"\n')
    with pytest.raises(ConfigError, match="base: inheritance cycle: a.toml -> b.toml -> a.toml"):
        config.load(tmp_path / "a.toml")
    (tmp_path / "numbered.toml").write_text("base = 3\n")
    with pytest.raises(ConfigError, match="base: expected a config name or path, got 3"):
        config.load(tmp_path / "numbered.toml")
    (tmp_path / "broken.toml").write_text("[model\n")
    with pytest.raises(ConfigError, match="broken.toml is not valid TOML"):
        config.load(tmp_path / "broken.toml")
    with pytest.raises(ConfigError, match="override 'model.num_layers' is not of the form section.key=value"):
        config.load("tiny", ["model.num_layers"])
    with pytest.raises(ConfigError, match="model.num_layers: expected an integer, got 'four'"):
        config.load("tiny", ["model.num_layers=four"])
    with pytest.raises(ConfigError, match="model.d_model.size: model.d_model is a value, not a table"):
        config.load("tiny", ["model.d_model.size=3"])


@pytest.mark.parametrize("key", ["train.learning_rate", "train.grad_clip", "model.norm_eps", "model.attention.softmax_scale", "model.position.rope_theta"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_numbers_are_refused_on_load(key, value):
    with pytest.raises(config.ConfigError, match=f"{key}: expected a finite number, got"):
        config.load("tiny", [f"{key}={value}"])


@pytest.mark.parametrize("key, value", [("train.steps", 2**31), ("model.vocab_size", 10**10), ("train.seed", -(2**40)), ("model.d_model", 10**400)])
def test_integers_beyond_int32_are_refused_on_load(key, value):
    with pytest.raises(config.ConfigError, match=f"{key}: {value} is out of range; integer settings must lie within"):
        config.load("tiny", [f"{key}={value}"])
