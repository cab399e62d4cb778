"""Weights held quantized: int8 per output channel and NF4 in blocks of 64, against plain references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from test_kernels import saved_elements
from test_lora import TOKENS, model_config
from zoo.layers.linear import Linear
from zoo.layers.quantized import dequantized, hold, project, quantize_weight
from zoo.models import build

NF4 = np.array([  # QLoRA's NormalFloat levels (Dettmers et al. 2023, appendix E)
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
])


def int8_reference(w, inputs):
    """Symmetric int8 with one scale per output channel: its absmax maps to 127.5 (the top level
    widened by half a step), values round into [-128, 127]. Returns (the dequantized values, where
    a value sits on the rounding edge -127.5, which float32 and float64 may round either way)."""
    scale = np.abs(w).max(axis=inputs, keepdims=True) / 127.5
    levels = w / scale
    return np.clip(np.round(levels), -128, 127) * scale, np.isclose(levels, -127.5)


def nf4_reference(w, axis, block=64):
    """Each block of `block` along `axis` scaled by its absmax, every value snapped to the nearest NF4 level."""
    moved = np.moveaxis(w, axis, -1)
    blocks = moved.reshape(*moved.shape[:-1], -1, block)
    scale = np.abs(blocks).max(-1, keepdims=True)
    snapped = NF4[np.abs(blocks[..., None] / scale[..., None] - NF4).argmin(-1)] * scale
    return np.moveaxis(snapped.reshape(moved.shape), -1, axis)


def test_int8_and_nf4_match_their_references():
    w = np.random.default_rng(0).normal(size=(2, 128, 4, 8)).astype(np.float32)  # [layers, in, heads, head_dim]
    int8 = quantize_weight(jnp.asarray(w), num_lead=1, num_in=1, scheme="int8")
    assert int8.weight.qvalue.dtype == jnp.int8 and int8.weight.scale.shape == (2, 1, 4, 8)
    expected, edge = int8_reference(w, inputs=1)
    np.testing.assert_allclose(np.where(edge, expected, dequantized(int8, jnp.float32)), expected, atol=1e-6)
    nf4 = quantize_weight(jnp.asarray(w), num_lead=1, num_in=1, scheme="nf4")
    assert nf4.weight.qvalue.dtype == jnp.uint4 and nf4.weight.scale.shape == (2, 2, 4, 8)  # two blocks of 64 inputs
    np.testing.assert_allclose(dequantized(nf4, jnp.float32), nf4_reference(w, axis=1), atol=1e-6)


def test_a_product_with_a_quantized_weight_keeps_the_quantized_weight_for_its_backward(capsys):
    layer = Linear(256, 512, ("embed", "mlp"), rngs=nnx.Rngs(0))
    layer.weight.set_value(quantize_weight(layer.weight.get_value(), 0, 1, "nf4"))
    x = jnp.ones((4, 256))
    weight = layer.weight.get_value()
    dx = jax.grad(lambda x: jnp.sum(project(x, layer.weight, 1, jnp.float32) ** 2))(x)
    np.testing.assert_allclose(dx, 2 * (x @ dequantized(weight, jnp.float32)) @ dequantized(weight, jnp.float32).T, rtol=1e-5, atol=1e-5)
    kept = saved_elements(lambda x, q: jnp.sum(jnp.tanh(jnp.tensordot(x, dequantized(q, jnp.float32), axes=1))), x, weight, capsys=capsys)
    assert kept >= 256 * 512  # a plain product keeps the dequantized [256, 512] weight
    kept = saved_elements(lambda x, q: jnp.sum(jnp.tanh(project(x, nnx.Param(q), 1, jnp.float32))), x, weight, capsys=capsys)
    assert kept < 256 * 512 // 4  # project keeps its arguments alone: x and the NF4 weight


@pytest.mark.parametrize("kind, tolerance", [("int8", 0.04), ("w8a8", 0.05), ("nf4", 0.4)])  # 4 bits err more
@pytest.mark.parametrize("moe", [False, True], ids=["dense", "moe"])
def test_a_model_with_quantized_weights_stays_near_its_float_logits(kind, tolerance, moe):
    experts = {"moe": {"num_experts": 4, "top_k": 2, "expert_ffn_dim": 64}} if moe else {}
    model = build(model_config(d_model=64, ffn_dim=128, **experts))
    params = model.init(jax.random.key(0))
    expected = model.apply(params, TOKENS).logits
    module = model.bind(jax.tree.map(lambda x: x, params))
    hold(module, kind)
    quantized = nnx.state(module)
    held = quantized["tower"]["layers"]["ffn"]["experts"]["up"] if moe else quantized["tower"]["layers"]["attention"]["q"]["weight"]
    assert held.get_value().weight.qvalue.dtype == (jnp.uint4 if kind == "nf4" else jnp.int8)
    got = model.apply(quantized, TOKENS).logits
    error = float(jnp.linalg.norm(got - expected) / jnp.linalg.norm(expected - expected.mean()))
    assert 0 < error < tolerance


SCHEME_ERRORS = {"int8": 0.012, "w8a8": 0.015, "fp8": 0.05, "nf4": 0.18}  # bounds on the logits error relative to their spread (0.0036, 0.0050, 0.018, 0.059 measured)


def test_every_scheme_saves_loads_and_stays_near_the_float_logits_of_a_transformers_model(tmp_path, capsys):
    """A random transformers Llama imported, quantized by `python -m zoo.quantize`, read back by runs.load."""
    pytest.importorskip("transformers")
    from hf_cases import hf_model
    from zoo import runs
    from zoo.hf import import_run
    from zoo.quantize import main as quantize_main

    hf_model("llama").save_pretrained(tmp_path / "hf", safe_serialization=True)
    import_run(tmp_path / "hf", tmp_path / "run")
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 97, size=(2, 12)), jnp.int32)
    float_run = runs.load(tmp_path / "run")
    expected = float_run.model.apply(float_run.params, tokens).logits
    spread = jnp.linalg.norm(expected - expected.mean())
    errors = {}
    for scheme, bound in SCHEME_ERRORS.items():
        quantize_main([str(tmp_path / "run"), str(tmp_path / scheme), "--to", scheme])
        run = runs.load(tmp_path / scheme)
        assert run.config.model.quantization == scheme
        errors[scheme] = float(jnp.linalg.norm(run.model.apply(run.params, tokens).logits - expected) / spread)
        assert 0 < errors[scheme] < bound, errors
    assert errors["int8"] < errors["nf4"]
    with pytest.raises(SystemExit):
        quantize_main([str(tmp_path / "int8"), str(tmp_path / "again"), "--to", "nf4"])
    assert "already quantized (int8); quantize the float run it came from" in capsys.readouterr().err


def held_bytes(tree) -> int:
    """Bytes of a tree's arrays, 4-bit ones at half a byte."""
    return sum(x.size * (0.5 if x.dtype == jnp.uint4 else x.dtype.itemsize) for x in jax.tree.leaves(tree))


@pytest.mark.parametrize("fields", [{}, {"moe": {"num_experts": 4, "top_k": 2, "expert_ffn_dim": 64, "shared_ffn_dim": 32}}], ids=["dense", "moe"])
def test_stats_weight_bytes_are_the_bytes_a_quantized_model_holds(fields):
    from zoo import stats
    from zoo.models.model import quantized

    model = build(model_config(d_model=64, ffn_dim=128, tie_embeddings=False, **fields))
    params = model.init(jax.random.key(0))
    figures = stats.weight_bytes(model)
    assert figures["float32"] == held_bytes(params) and figures["bfloat16"] == held_bytes(params) // 2
    for scheme in ("int8", "w8a8", "fp8", "nf4"):
        assert figures[scheme] == held_bytes(quantized(model, params, scheme)[1]), scheme


def test_adapter_gradients_through_a_quantized_base_equal_those_through_its_dequantized_weights():
    """QLoRA's backward (rematerialised products, experts too) against the same weights held dequantized."""
    from zoo import config
    from zoo.layers.quantized import Quantized

    cfg = model_config(d_model=64, ffn_dim=128, moe={"num_experts": 4, "top_k": 2, "expert_ffn_dim": 64})
    model = build(cfg, config.LoraConfig(rank=2, targets=("attention.*", "ffn.*")))
    adapters, base = nnx.split_state(model.init(jax.random.key(0)), nnx.LoRAParam, ...)
    adapters = jax.tree.map(lambda v: v.replace(v[...] + 0.1), adapters, is_leaf=lambda x: isinstance(x, nnx.Variable))
    module = build(cfg).bind(base)
    hold(module, "nf4")
    quantized_base = nnx.state(module)
    as_floats = jax.tree.map(
        lambda v: v.replace(dequantized(v.get_value(), jnp.float32)) if isinstance(v.get_value(), Quantized) else v,
        quantized_base, is_leaf=lambda x: isinstance(x, nnx.Variable),
    )
    loss = lambda a, b: jnp.sum(jnp.tanh(model.apply(nnx.merge_state(a, b), TOKENS).logits))
    got = jax.jit(jax.grad(loss))(adapters, quantized_base)
    expected = jax.jit(jax.grad(loss))(adapters, as_floats)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4), got, expected)


def test_w8a8_experts_quantize_each_row_they_multiply():
    """Grouped (dropless) and batched (capacity) expert products under w8a8 against a reference
    that quantizes every row reaching a matrix (int8, a scale per row: qwix's quantizer, whose
    rounding test_int8_and_nf4_match_their_references checks) and dequantizes the weights. A
    hidden value on a rounding edge may land one level apart (the sums' order differs), so the
    check is the mean error: a small fraction of the weight-only (int8) product's."""
    import qwix

    from zoo.layers.moe.experts import Experts
    from zoo.layers.quantized import quantize_weights

    rng = np.random.default_rng(3)
    x = rng.normal(size=(10, 16)).astype(np.float32)
    sizes = np.array([3, 0, 5, 2])
    experts = {scheme: Experts(4, 16, 32, rngs=nnx.Rngs(0)) for scheme in ("w8a8", "int8")}
    for scheme, module in experts.items():
        quantize_weights(module, scheme)
    gate, up, down = (np.asarray(dequantized(getattr(experts["w8a8"], n).get_value(), jnp.float32)) for n in ("gate", "up", "down"))

    def rows(a):  # each row quantized to int8 with its own scale, and back
        return np.asarray(qwix.dequantize(qwix.quantize(jnp.asarray(a, jnp.float32), jnp.int8, channelwise_axes=(0,))))

    def reference(a, e):  # a [M, D], e [M]: each row's expert
        product = lambda spec, u, w: np.asarray(jnp.einsum(spec, jnp.asarray(u), jnp.asarray(w)))  # in float32, as the layer
        hidden = np.asarray(jax.nn.silu(product("md,mdf->mf", rows(a), gate[e]))) * product("md,mdf->mf", rows(a), up[e])
        return product("mf,mfd->md", rows(hidden), down[e])

    def errors(got, expected):
        return {scheme: float(np.abs(value - expected).mean()) for scheme, value in got.items()}

    grouped = {s: np.asarray(m.grouped(jnp.asarray(x), jnp.asarray(sizes, jnp.int32))) for s, m in experts.items()}
    error = errors(grouped, reference(x, np.repeat(np.arange(4), sizes)))
    assert error["w8a8"] < error["int8"] / 5, error  # 0.0004 against 0.007 here
    slots = x[:8].reshape(4, 2, 16)
    batched = {s: np.asarray(m.batched(jnp.asarray(slots))).reshape(8, 16) for s, m in experts.items()}
    error = errors(batched, reference(x[:8], np.repeat(np.arange(4), 2)))
    assert error["w8a8"] < error["int8"] / 5, error
    empty = np.asarray(experts["w8a8"].batched(jnp.zeros((4, 2, 16))))  # unfilled capacity slots: all-zero rows
    assert np.all(np.isfinite(empty))
