"""Every attention kernel that runs here against the plain XLA kernel: outputs and gradients."""

import dataclasses
import functools
import logging
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference

from zoo.layers import KERNELS
from zoo.layers.attention.bias import LogitBias
from zoo.layers.attention.pallas_gpu import decode_tiling
from zoo.layers.attention.notices import say_once
from zoo.layers.attention import (
    AttentionMask,
    auto_attention,
    auto_choice,
    check_available,
    chunked_attention,
    cudnn_attention,
    gpu_decode_attention,
    gpu_flash_attention,
    segment_positions,
    splash_attention,
    xla_attention,
)

B = 2

CASES = {
    # name: (T, S, H, K, causal, window, softcap, sinks, segments); "global" cases also mark global tokens
    "causal_gqa": (12, 12, 4, 2, True, None, None, False, False),
    "bidirectional_mqa": (12, 12, 4, 1, False, None, None, False, False),
    "window_softcap_sinks": (13, 13, 4, 2, True, 4, 5.0, True, False),
    "packed_and_padded": (12, 12, 4, 4, True, None, None, True, True),
    "cache_shaped": (3, 17, 4, 2, True, None, None, False, False),
    "global_bidirectional": (12, 12, 4, 2, False, 3, None, False, False),
    "global_causal_packed": (12, 12, 4, 2, True, 2, None, False, True),
}


def inputs(T, S, H, K, segments, seed=0):
    rng = np.random.default_rng(seed)
    q = jnp.asarray(rng.normal(size=(B, T, H, 8)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(B, S, K, 8)), jnp.float32)
    v = jnp.asarray(rng.normal(size=(B, S, K, 8)), jnp.float32)
    k_positions = jnp.broadcast_to(jnp.arange(S), (B, S))
    q_positions = k_positions[:, S - T :]
    k_segments = jnp.ones((B, S), jnp.int32)
    if segments:  # row 0: two documents then padding
        k_segments = jnp.asarray([[1] * 5 + [2] * 5 + [0] * (S - 10), [1] * S])
        k_positions = jnp.asarray([list(range(5)) + list(range(5)) + [0] * (S - 10), list(range(S))])
        q_positions = k_positions
    q_segments = k_segments[:, S - T :]
    return q, k, v, q_positions, k_positions, q_segments, k_segments


@pytest.mark.parametrize("kernel", [functools.partial(chunked_attention, block=4), chunked_attention])
@pytest.mark.parametrize("case", sorted(CASES))
def test_kernel_equals_xla_forward_and_backward(kernel, case):
    T, S, H, K, causal, window, cap, with_sinks, segments = CASES[case]
    q, k, v, qp, kp, qs, ks = inputs(T, S, H, K, segments)
    flags = jnp.zeros((B, S), bool).at[:, [0, 7]].set(True) if case.startswith("global") else None
    mask = AttentionMask(qp, kp, qs, ks, causal, window, False, flags, flags)
    sinks = jnp.linspace(-1.0, 1.0, H) if with_sinks else None
    real = (qs != 0)[..., None, None]  # padding queries are not compared (their output is arbitrary)
    weights = jnp.asarray(np.random.default_rng(1).normal(size=(B, T, H, 8)), jnp.float32) * real

    def loss(attend, q, k, v, sinks):
        out = attend(q, k, v, mask, scale=8**-0.5, logit_softcap=cap, sinks=sinks)
        return jnp.sum(out * weights), out

    grad = functools.partial(jax.grad, has_aux=True, argnums=(0, 1, 2) + ((3,) if with_sinks else ()))
    expected_grads, expected = jax.jit(grad(functools.partial(loss, xla_attention)))(q, k, v, sinks)
    grads, out = jax.jit(grad(functools.partial(loss, kernel)))(q, k, v, sinks)
    np.testing.assert_allclose(out * real, expected * real, atol=2e-5)
    for g, e in zip(grads, expected_grads):
        np.testing.assert_allclose(g, e, atol=2e-5)


@pytest.mark.parametrize("causal", [False, True])
def test_global_tokens_see_and_are_seen_past_the_window(causal):
    q, k, v, qp, kp, qs, ks = inputs(12, 12, 4, 2, False)
    flags = np.zeros((B, 12), bool)
    flags[:, [0, 7]] = True
    mask = AttentionMask(qp, kp, qs, ks, causal, 3, False, jnp.asarray(flags), jnp.asarray(flags))
    i, j = np.arange(12)[:, None], np.arange(12)[None]
    visible = (np.abs(i - j) < 3)[None] | flags[:, :, None] | flags[:, None, :]
    if causal:
        visible &= (j <= i)[None]
    np.testing.assert_allclose(xla_attention(q, k, v, mask, scale=8**-0.5), reference.attention(q, k, v, visible), atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_chunked_position_bias_and_its_gradient(causal):
    """A learned T5-style bias table: the chunked kernel's output and gradients (table included) equal xla's."""
    q, k, v, qp, kp, qs, ks = inputs(12, 12, 4, 2, False)
    mask = AttentionMask(qp, kp, qs, ks, causal)
    table = jnp.asarray(np.random.default_rng(5).normal(size=(8, 4)), jnp.float32)

    def t5_like(table, q_positions, k_positions):
        buckets = jnp.clip(k_positions[:, None, :] - q_positions[:, :, None] + 4, 0, 7)
        return jnp.moveaxis(table[buckets], -1, 1)

    def loss(attend, q, k, v, table):
        return jnp.sum(attend(q, k, v, mask, scale=0.3, bias=LogitBias(table, t5_like)) ** 2)

    chunked = functools.partial(chunked_attention, block=4)
    got = jax.jit(jax.value_and_grad(functools.partial(loss, chunked), argnums=(0, 1, 2, 3)))(q, k, v, table)
    expected = jax.jit(jax.value_and_grad(functools.partial(loss, xla_attention), argnums=(0, 1, 2, 3)))(q, k, v, table)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5), got, expected)
    assert float(jnp.abs(got[1][3]).sum()) > 0


def test_bfloat16_inputs():
    q, k, v, qp, kp, qs, ks = (jnp.asarray(x, jnp.bfloat16) if i < 3 else x for i, x in enumerate(inputs(12, 12, 4, 2, False)))
    mask = AttentionMask(qp, kp, qs, ks, True)
    out = chunked_attention(q, k, v, mask, scale=8**-0.5, block=4)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(out, np.float32), np.asarray(xla_attention(q, k, v, mask, scale=8**-0.5), np.float32), atol=2e-2)


def temp_bytes(attend, length):
    q = k = v = jax.ShapeDtypeStruct((1, length, 4, 32), jnp.float32)
    positions = jax.ShapeDtypeStruct((1, length), jnp.int32)

    def loss(q, k, v, positions):
        mask = AttentionMask.self_attention(positions, positions * 0 + 1, causal=True)
        return jnp.sum(attend(q, k, v, mask, scale=0.1))

    compiled = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).lower(q, k, v, positions).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_chunked_training_memory_grows_linearly():
    """Doubling T doubles the chunked kernel's scratch memory (forward + backward), but
    quadruples the plain kernel's, whose logits are [T, T]."""
    chunked = functools.partial(chunked_attention, block=128)
    assert temp_bytes(chunked, 4096) < 2.5 * temp_bytes(chunked, 2048)
    assert temp_bytes(xla_attention, 4096) > 3.5 * temp_bytes(xla_attention, 2048)


def saved_elements(fn, *args, capsys) -> int:
    """Elements of the residuals jax keeps from fn(*args) for its backward pass (not its arguments)."""
    import math

    from jax.ad_checkpoint import print_saved_residuals

    capsys.readouterr()
    print_saved_residuals(fn, *args)
    lines = [line for line in capsys.readouterr().out.splitlines() if "from the argument" not in line]
    shapes = [re.match(r"\w+\[([\d,]*)\]", line).group(1) for line in lines if re.match(r"\w+\[", line)]
    return sum(math.prod(int(n) for n in shape.split(",") if n) for shape in shapes)


@pytest.mark.parametrize("kernel", [splash_attention, gpu_flash_attention, chunked_attention])
def test_fused_kernels_keep_linear_residuals(kernel, capsys):
    """What the backward pass keeps of a fused kernel (in Pallas's interpreter) grows linearly in T,
    as the chunked kernel's: no [T, S] logits."""
    options = {} if kernel is chunked_attention else {"interpret": True}

    def kept(length):
        q, k, v = jnp.zeros((1, length, 4, 64)), jnp.zeros((1, length, 2, 64)), jnp.zeros((1, length, 2, 64))
        segments = jnp.ones((1, length), jnp.int32)
        mask = AttentionMask(segment_positions(segments), segment_positions(segments), segments, segments, True, aligned=True)
        return saved_elements(lambda q, k, v: jnp.sum(kernel(q, k, v, mask, scale=0.125, **options)), q, k, v, capsys=capsys)

    assert kept(1024) < 2.2 * kept(512)


@pytest.mark.parametrize("remat", ["none", "full", "dots", "dots_no_batch"])
def test_chunked_model_keeps_linear_residuals_under_every_remat_policy(small_config, remat, capsys):
    """What a training step keeps for its backward pass grows linearly in T for a model with
    the chunked kernel, whatever the remat policy (a matmul-keeping policy once kept its logits)."""
    from zoo import config, models
    from zoo.train.step import batch_sums

    model = models.build(small_config(remat=remat, max_seq_len=2048, attention={"kernel": "chunked"}))
    params = jax.eval_shape(model.init, jax.random.key(0))

    def kept(length):  # elements of the residuals the step computes (not its arguments)
        rows = {"tokens": jnp.zeros((1, length + 1), jnp.int32), "segment_ids": jnp.ones((1, length + 1), jnp.int32)}
        run = config.TrainConfig(seq_len=length)
        return saved_elements(lambda p: batch_sums(model, p, rows, run)[0], params, capsys=capsys)

    assert kept(1024) < 2.2 * kept(512)


def assert_interpreted_kernel_equals_xla(kernel, causal, window, cap, packed, heads=4, kv_heads=2, head_dim=64):
    """`kernel` in Pallas's interpreter against xla_attention on 256 tokens (row 0 two documents
    when `packed`): the loss's value and its gradients by q, k and v."""
    length = 256
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(B, length, heads, head_dim)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(B, length, kv_heads, head_dim)), jnp.float32) for _ in range(2))
    segments = jnp.asarray([[1] * 100 + [2] * 156, [1] * length]) if packed else None
    positions = segment_positions(segments) if packed else jnp.broadcast_to(jnp.arange(length), (B, length))
    mask = AttentionMask(positions, positions, segments, segments, causal, window, aligned=True)
    weights = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

    def loss(attend, q, k, v):
        return jnp.sum(attend(q, k, v, mask, scale=head_dim**-0.5, logit_softcap=cap) * weights)

    interpreted = functools.partial(kernel, interpret=True)
    for got, expected in zip(
        jax.value_and_grad(functools.partial(loss, interpreted), argnums=(0, 1, 2))(q, k, v),
        jax.value_and_grad(functools.partial(loss, xla_attention), argnums=(0, 1, 2))(q, k, v),
    ):
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), got, expected)


@pytest.mark.parametrize(
    "causal, window, cap, packed, head_dim",
    [(True, None, None, False, 64), (False, None, 5.0, True, 128), (True, 32, None, True, 256)],  # the models' head sizes
)
def test_pallas_splash_in_interpret_mode(causal, window, cap, packed, head_dim):
    assert_interpreted_kernel_equals_xla(splash_attention, causal, window, cap, packed, head_dim=head_dim)


@pytest.mark.parametrize(
    "causal, packed, heads, kv_heads, head_dim",
    [(True, True, 4, 2, 64), (False, True, 2, 1, 128), (True, False, 2, 2, 256)],  # GQA, MQA, MHA; the models' head sizes
)
def test_pallas_gpu_flash_in_interpret_mode(causal, packed, heads, kv_heads, head_dim):
    assert_interpreted_kernel_equals_xla(gpu_flash_attention, causal, None, None, packed, heads, kv_heads, head_dim)


@pytest.mark.parametrize(
    "kernel",
    [
        cudnn_attention, functools.partial(splash_attention, interpret=True), functools.partial(gpu_flash_attention, interpret=True),
        auto_attention,
    ],
)
def test_fused_kernels_fall_back_where_they_cannot_run(kernel, caplog):
    """A cache-shaped call (not aligned) and, on CPU, cuDNN itself: the chunked kernel answers."""
    q, k, v, qp, kp, qs, ks = inputs(3, 17, 4, 2, False)
    mask = AttentionMask(qp, kp, qs, ks, True)
    with caplog.at_level(logging.INFO, logger="zoo.attention"):
        out = kernel(q, k, v, mask, scale=8**-0.5)
    np.testing.assert_allclose(out, xla_attention(q, k, v, mask, scale=8**-0.5), atol=2e-5)


def test_auto_says_what_it_picked(caplog):
    say_once.cache_clear()  # each choice is said once per process, and earlier tests may have said it
    q, k, v, qp, kp, qs, ks = inputs(12, 12, 4, 2, False)
    with caplog.at_level(logging.INFO, logger="zoo.attention"):
        auto_attention(q, k, v, AttentionMask(qp, kp, qs, ks, True), scale=0.3)
    assert "auto picked xla_attention on cpu" in caplog.text


@pytest.mark.parametrize(
    "backend, T, S, packed, picked",
    [
        ("gpu", 256, 256, False, cudnn_attention),
        ("gpu", 256, 256, True, gpu_flash_attention),  # the training step's call: its segment ids
        ("tpu", 256, 256, True, splash_attention),
        ("cpu", 256, 256, True, xla_attention),
        ("cpu", 4096, 4096, False, chunked_attention),  # [T, S] logits past CPU_LOGITS_LIMIT
    ],
)
def test_auto_picks_each_backends_kernel(backend, T, S, packed, picked):
    q, k = jnp.zeros((1, T, 4, 8)), jnp.zeros((1, S, 2, 8))
    positions = jnp.broadcast_to(jnp.arange(T), (1, T))
    segments = jnp.ones((1, T), jnp.int32) if packed else None
    assert auto_choice(backend, q, k, AttentionMask(positions, positions, segments, segments, True, aligned=True)) is picked


def decode_call(heads, kv_heads, head_dim, slots=256):
    """One query per row against a full cache as KVCache lays it out: row 0 holds one document of
    10 tokens, row 1 two (4 tokens, then 3) whose second the query continues; the rest is empty."""
    rng = np.random.default_rng(0)
    q = jnp.asarray(rng.normal(size=(B, 1, heads, head_dim)), jnp.float32)
    k, v = (jnp.asarray(rng.normal(size=(B, slots, kv_heads, head_dim)), jnp.float32) for _ in range(2))
    segments, positions = np.zeros((B, slots), np.int32), np.zeros((B, slots), np.int32)
    segments[0, :10], positions[0, :10] = 1, np.arange(10)
    segments[1, :7], positions[1, :7] = [1] * 4 + [2] * 3, [0, 1, 2, 3, 0, 1, 2]
    mask = AttentionMask(jnp.asarray([[9], [2]]), jnp.asarray(positions), jnp.asarray([[1], [2]]), jnp.asarray(segments), True)
    return q, k, v, mask


@pytest.mark.parametrize("heads, kv_heads, head_dim, slots", [(4, 2, 64, 256), (8, 1, 128, 272), (2, 2, 256, 48)])
def test_pallas_gpu_decode_in_interpret_mode(heads, kv_heads, head_dim, slots):
    q, k, v, mask = decode_call(heads, kv_heads, head_dim, slots)
    got = gpu_decode_attention(q, k, v, mask, scale=head_dim**-0.5, interpret=True)
    np.testing.assert_allclose(got, xla_attention(q, k, v, mask, scale=head_dim**-0.5), rtol=1e-5, atol=1e-5)


def test_a_decode_step_lowers_to_the_triton_decode_kernel_for_nvidia_gpus():
    q, k, v, mask = decode_call(4, 2, 64)
    step = jax.jit(lambda q, k, v, mask: gpu_decode_attention(q, k, v, mask, scale=0.125))
    lowered = step.trace(q, k, v, mask).lower(lowering_platforms=("cuda",)).as_text()
    assert "__gpu$xla.gpu.triton" in lowered


def test_pallas_gpu_decode_falls_back_for_rolling_caches_and_soft_caps(caplog):
    say_once.cache_clear()
    q, k, v, mask = decode_call(4, 2, 64)
    windowed = dataclasses.replace(mask, window=8)
    with caplog.at_level(logging.INFO, logger="zoo.attention"):
        got = gpu_decode_attention(q, k, v, windowed, scale=0.125, interpret=True)
        gpu_decode_attention(q, k, v, mask, scale=0.125, logit_softcap=5.0, interpret=True)
    np.testing.assert_allclose(got, xla_attention(q, k, v, windowed, scale=0.125), rtol=1e-5, atol=1e-5)
    assert "pallas cannot take this call (a sliding window or chunks)" in caplog.text
    assert "(sinks, a position bias, soft-capping or global tokens)" in caplog.text
    assert decode_tiling(4096) == (16, 128) and decode_tiling(272) == (1, 16) and decode_tiling(40) is None


def test_packed_training_attention_lowers_to_triton_flash_kernels_for_nvidia_gpus():
    """The training step's call (bf16, GQA, packed segments) lowered for CUDA from this CPU: its
    forward and backward are Pallas's Triton kernels, not the chunked fallback."""
    q, k = jnp.zeros((1, 256, 4, 64), jnp.bfloat16), jnp.zeros((1, 256, 2, 64), jnp.bfloat16)
    segments = jnp.asarray([[1] * 100 + [2] * 156])
    positions = segment_positions(segments)
    mask = AttentionMask(positions, positions, segments, segments, True, aligned=True)
    loss = lambda q, k, v: jnp.sum(gpu_flash_attention(q, k, v, mask, scale=0.125).astype(jnp.float32))
    lowered = jax.jit(jax.grad(loss, argnums=(0, 1, 2))).trace(q, k, k).lower(lowering_platforms=("cuda",)).as_text()
    kernels = set(re.findall(r'custom_call @__gpu\$xla\.gpu\.triton\(.*?name = "(\w+)"', lowered))
    assert kernels == {"mha_forward", "mha_preprocess_backward", "mha_backward"}, kernels


def test_fused_kernels_say_why_they_fall_back(caplog):
    say_once.cache_clear()
    q, k, v, qp, kp, qs, ks = inputs(12, 12, 4, 2, False)
    with caplog.at_level(logging.INFO, logger="zoo.attention"):
        gpu_flash_attention(q, k, v, AttentionMask(qp, kp, qs, ks, True, 4, aligned=True), scale=0.3, interpret=True)
        gpu_flash_attention(q, k, v, AttentionMask(qp, kp, qs, ks, True, aligned=True), scale=0.3, interpret=True)
    assert "attention: pallas cannot take this call (a sliding window); using chunked" in caplog.text
    assert "attention: pallas cannot take this call (length 12 is not a multiple of 128); using chunked" in caplog.text


def test_kernels_named_for_other_backends_are_refused():
    check_available("xla")
    check_available("chunked")
    with pytest.raises(ValueError, match="attention kernel 'cudnn' needs a gpu backend, but jax is running on cpu"):
        check_available("cudnn")
    with pytest.raises(ValueError, match="attention kernel 'pallas' needs a gpu or tpu backend"):
        check_available("pallas")
    check_available("pallas", backend="tpu")
    check_available("pallas", backend="gpu")
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'"):
        check_available("flash")


def test_kernels_are_registered():
    assert set(KERNELS.names()) == {"auto", "xla", "chunked", "cudnn", "pallas"}
