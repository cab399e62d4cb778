"""Attention against the plain softmax(QK^T/sqrt(d))V formula, MHA/GQA/MQA as one module, MLA,
and the SelfAttention contract every self-attention kind meets."""

import inspect
import typing

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference
from helpers import jitted
from zoo import models
from zoo.config.schema import AttentionConfig
from zoo.layers import AttentionMask, GroupedQueryAttention, RoPE, xla_attention
from zoo.layers.attention import SelfAttention
from zoo.layers.attention.cross import CrossAttention
from zoo.layers.attention.mla import MultiHeadLatentAttention

B, T, D = 2, 7, 32


def qkv(heads, kv_heads, head_dim=8, length=T, seed=0):
    rng = np.random.default_rng(seed)
    return (
        rng.normal(size=(B, length, heads, head_dim)).astype(np.float32),
        rng.normal(size=(B, length, kv_heads, head_dim)).astype(np.float32),
        rng.normal(size=(B, length, kv_heads, head_dim)).astype(np.float32),
    )


def ones(shape):
    return jnp.ones(shape, jnp.int32)


@pytest.mark.parametrize("heads, kv_heads", [(4, 4), (4, 2), (4, 1), (6, 3)])
@pytest.mark.parametrize("causal", [True, False])
def test_kernel_matches_formula(heads, kv_heads, causal):
    q, k, v = qkv(heads, kv_heads)
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    mask = AttentionMask.self_attention(positions, ones((B, T)), causal=causal)
    out = xla_attention(q, k, v, mask, scale=8**-0.5)
    visible = reference.causal_mask(B, T) if causal else np.ones((B, T, T), bool)
    np.testing.assert_allclose(out, reference.attention(q, k, v, visible), atol=1e-5)


@pytest.mark.parametrize("causal", [True, False])
def test_window_sees_only_nearby_keys(causal):
    q, k, v = qkv(4, 2)
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    mask = AttentionMask.self_attention(positions, ones((B, T)), causal=causal, window=3)
    i, j = np.arange(T)[:, None], np.arange(T)[None]
    visible = (np.abs(i - j) < 3) & ((j <= i) if causal else True)
    expected = reference.attention(q, k, v, np.broadcast_to(visible, (B, T, T)))
    np.testing.assert_allclose(xla_attention(q, k, v, mask, scale=8**-0.5), expected, atol=1e-5)


def test_sinks_absorb_probability():
    """softmax over [logits, sink] with the sink's column dropped: weights sum to 1 - p(sink)."""
    q, k, v = qkv(4, 2)
    sinks = np.array([0.0, 1.0, -1.0, 3.0], np.float32)
    mask = AttentionMask.self_attention(jnp.broadcast_to(jnp.arange(T), (B, T)), ones((B, T)), causal=True)
    out = xla_attention(q, k, v, mask, scale=8**-0.5, sinks=jnp.asarray(sinks))
    logits = np.einsum("bthd,bshd->bhts", q, np.repeat(k, 2, axis=2)) * 8**-0.5
    logits = np.where(reference.causal_mask(B, T)[:, None], logits, -np.inf)
    exp, sink = np.exp(logits), np.exp(sinks)[None, :, None, None]
    weights = exp / (exp.sum(-1, keepdims=True) + sink)
    expected = np.einsum("bhts,bshd->bthd", weights, np.repeat(v, 2, axis=2))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_padding_and_segments_mask_exactly_those_keys():
    q, k, v = qkv(4, 2)
    segments = np.array([[1, 1, 1, 2, 2, 0, 0], [1, 1, 1, 1, 1, 1, 1]])
    positions = np.array([[0, 1, 2, 0, 1, 0, 0], list(range(T))])
    mask = AttentionMask.self_attention(jnp.asarray(positions), jnp.asarray(segments), causal=True)
    out = np.asarray(xla_attention(q, k, v, mask, scale=8**-0.5))
    visible = np.zeros((B, T, T), bool)
    for b in range(B):
        for i in range(T):
            for j in range(T):
                visible[b, i, j] = segments[b, i] == segments[b, j] and positions[b, j] <= positions[b, i]
    real = segments != 0
    expected = reference.attention(q, k, v, visible)
    np.testing.assert_allclose(out[real], expected[real], atol=1e-5)
    assert np.isfinite(out).all()  # padding rows stay finite


def test_softcap_matches_formula():
    q, k, v = qkv(4, 2)
    q = q * 10  # large logits, so the cap matters
    mask = AttentionMask.self_attention(jnp.broadcast_to(jnp.arange(T), (B, T)), ones((B, T)), causal=True)
    out = xla_attention(q, k, v, mask, scale=8**-0.5, logit_softcap=5.0)
    expected = reference.attention(q, k, v, reference.causal_mask(B, T), softcap=5.0)
    np.testing.assert_allclose(out, expected, atol=1e-5)
    uncapped = reference.attention(q, k, v, reference.causal_mask(B, T))
    assert np.abs(expected - uncapped).max() > 1e-2


def qk_normed(x, norm):
    """x [B, T, N, Dh] RMS-normed over each head's Dh (scale [Dh]) or over all N heads together (scale [N, Dh])."""
    scale = np.asarray(norm.scale[...])
    if scale.ndim == 1:
        return reference.rms_norm(x, scale, 1e-6)
    return reference.rms_norm(x.reshape(*x.shape[:2], -1), scale.reshape(-1), 1e-6).reshape(x.shape)


def module_reference(attn: GroupedQueryAttention, x, positions, visible):
    """The module's computation written out with the formula references."""
    x = np.asarray(x, np.float64)
    w = lambda linear: np.asarray(linear.weight[...], np.float64)
    q = np.einsum("btd,dhk->bthk", x, w(attn.q))
    k = np.einsum("btd,dhk->bthk", x, w(attn.k))
    v = np.einsum("btd,dhk->bthk", x, w(attn.v))
    if attn.q_norm is not None:
        q, k = qk_normed(q, attn.q_norm), qk_normed(k, attn.k_norm)
    if attn.clip_qkv is not None:
        q, k, v = (np.clip(a, -attn.clip_qkv, attn.clip_qkv) for a in (q, k, v))
    if attn.rope is not None:
        q, k = reference.rope(q, positions), reference.rope(k, positions)
    out = reference.attention(q, k, v, visible)
    if attn.gate is not None:  # Qwen3-Next: each head's output times sigmoid(x W_gate)
        out = out / (1 + np.exp(-np.einsum("btd,dhk->bthk", x, w(attn.gate))))
    return np.einsum("bthk,hkd->btd", out, w(attn.o))


@pytest.mark.parametrize(
    "heads, kv_heads, qk_norm, causal, output_gate",
    [(4, 4, False, True, False), (4, 2, True, True, False), (4, 1, False, False, False), (4, 2, True, True, True)],
)
def test_module_matches_reference(heads, kv_heads, qk_norm, causal, output_gate):
    attn = GroupedQueryAttention(D, heads, kv_heads, 8, rope=RoPE(8), qk_norm=qk_norm, output_gate=output_gate, rngs=nnx.Rngs(1))
    if qk_norm:  # non-trivial norm scales
        attn.q_norm.scale[...] = jnp.linspace(0.5, 1.5, 8)
        attn.k_norm.scale[...] = jnp.linspace(1.5, 0.5, 8)
    x = np.random.default_rng(2).normal(size=(B, T, D)).astype(np.float32)
    positions = np.broadcast_to(np.arange(T), (B, T))
    out, _ = attn(x, jnp.asarray(positions), ones((B, T)), causal=causal)
    visible = reference.causal_mask(B, T) if causal else np.ones((B, T, T), bool)
    np.testing.assert_allclose(out, module_reference(attn, x, positions, visible), atol=1e-4)


@pytest.mark.parametrize("kv_heads", [4, 2])
def test_qk_norm_over_the_whole_projection_matches_reference(kv_heads):
    """OLMo 2: one RMS over all H * Dh of q and all K * Dh of k, before RoPE; q/k/v clipped."""
    attn = GroupedQueryAttention(
        D, 4, kv_heads, 8, rope=RoPE(8), qk_norm=True, qk_norm_over="projection", clip_qkv=0.3, rngs=nnx.Rngs(1)
    )
    assert attn.q_norm.scale.shape == (4, 8) and attn.k_norm.scale.shape == (kv_heads, 8)
    attn.q_norm.scale[...] = jnp.linspace(0.5, 1.5, 32).reshape(4, 8)
    attn.k_norm.scale[...] = jnp.linspace(1.5, 0.5, kv_heads * 8).reshape(kv_heads, 8)
    x = np.random.default_rng(2).normal(size=(B, T, D)).astype(np.float32)
    positions = np.broadcast_to(np.arange(T), (B, T))
    out, _ = attn(x, jnp.asarray(positions), ones((B, T)))
    np.testing.assert_allclose(out, module_reference(attn, x, positions, reference.causal_mask(B, T)), atol=1e-4)
    per_head = GroupedQueryAttention(D, 4, kv_heads, 8, rope=RoPE(8), qk_norm=True, clip_qkv=0.3, rngs=nnx.Rngs(1))
    assert not np.allclose(per_head(x, jnp.asarray(positions), ones((B, T)))[0], out, atol=1e-3)


def test_qkv_and_output_bias_are_added():
    attn = GroupedQueryAttention(D, 4, 2, 8, qkv_bias=True, out_bias=True, rngs=nnx.Rngs(0))
    assert attn.q.bias is not None and attn.o.bias is not None
    x = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, D)), jnp.float32)
    positions, segments = jnp.broadcast_to(jnp.arange(T), (B, T)), ones((B, T))
    before, _ = attn(x, positions, segments)
    attn.o.bias[...] = attn.o.bias[...] + 1.0
    after, _ = attn(x, positions, segments)
    np.testing.assert_allclose(after - before, 1.0, atol=1e-5)


@pytest.mark.parametrize("kv_heads", [1, 2, 6])  # MQA, GQA, and MHA itself
def test_gqa_equals_mha_with_repeated_kv_heads(kv_heads):
    """A K-head GQA computes exactly an H-head MHA whose k/v weights repeat each group's head."""
    heads = 6
    gqa = GroupedQueryAttention(D, heads, kv_heads, 8, rope=RoPE(8), rngs=nnx.Rngs(0))
    mha = GroupedQueryAttention(D, heads, heads, 8, rope=RoPE(8), rngs=nnx.Rngs(1))
    mha.q.weight[...] = gqa.q.weight[...]
    mha.o.weight[...] = gqa.o.weight[...]
    mha.k.weight[...] = jnp.repeat(gqa.k.weight[...], heads // kv_heads, axis=1)
    mha.v.weight[...] = jnp.repeat(gqa.v.weight[...], heads // kv_heads, axis=1)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, D)), jnp.float32)
    positions, segments = jnp.broadcast_to(jnp.arange(T), (B, T)), ones((B, T))
    np.testing.assert_allclose(gqa(x, positions, segments)[0], mha(x, positions, segments)[0], atol=1e-5)


def test_cached_attention_equals_full():
    attn = GroupedQueryAttention(D, 4, 2, 8, rope=RoPE(8), rngs=nnx.Rngs(0))
    run = jitted(attn)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, D)), jnp.float32)
    positions, segments = jnp.broadcast_to(jnp.arange(T), (B, T)), ones((B, T))
    full, _ = run(x, positions, segments)
    cache = attn.empty_cache(B, 16)
    outs = []
    for start, stop in [(0, 3), (3, 4), (4, 5), (5, 7)]:  # a prompt, then single tokens, then two
        out, cache = run(x[:, start:stop], positions[:, start:stop], segments[:, start:stop], cache=cache)
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)
    np.testing.assert_array_equal(cache.end, [T, T])


def test_cache_right_padding_is_overwritten_by_the_next_token():
    """Rows of different prompt lengths in one batch: each continues after its own last token."""
    attn = GroupedQueryAttention(D, 4, 2, 8, rope=RoPE(8), rngs=nnx.Rngs(0))
    run = jitted(attn)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 6, D)), jnp.float32)
    alone, _ = run(x, jnp.arange(6)[None], ones((1, 6)))
    # Row 0 holds the first 3 tokens then 2 pads; row 1 holds 5 real tokens.
    prompt = jnp.concatenate([x[:, :5], x[:, :5]])
    segments = jnp.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    cache = attn.empty_cache(2, 8)
    _, cache = run(prompt, jnp.broadcast_to(jnp.arange(5), (2, 5)), segments, cache=cache)
    np.testing.assert_array_equal(cache.end, [3, 5])
    next_tokens = jnp.concatenate([x[:, 3:4], x[:, 5:6]])
    out, cache = run(next_tokens, jnp.array([[3], [5]]), ones((2, 1)), cache=cache)
    np.testing.assert_allclose(out[0, 0], alone[0, 3], atol=1e-5)
    np.testing.assert_allclose(out[1, 0], alone[0, 5], atol=1e-5)


@pytest.mark.parametrize("prompt", [2, 5])  # a prompt shorter and longer than the window
def test_rolling_cache_decodes_far_past_the_window(prompt):
    window, length = 3, 20
    attn = GroupedQueryAttention(D, 4, 2, 8, rope=RoPE(8), window=window, sinks=True, rngs=nnx.Rngs(0))
    run = jitted(attn)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, length, D)), jnp.float32)
    positions, segments = jnp.arange(length)[None], ones((1, length))
    full, _ = run(x, positions, segments)
    cache = attn.empty_cache(1, window, rolling=True)
    out, cache = run(x[:, :prompt], positions[:, :prompt], segments[:, :prompt], cache=cache)
    outs = [out]
    for t in range(prompt, length):
        out, cache = run(x[:, t : t + 1], positions[:, t : t + 1], segments[:, t : t + 1], cache=cache)
        outs.append(out)
    assert cache.length == window and int(cache.end[0]) == length
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


def test_rolling_cache_keeps_each_rows_own_last_tokens():
    """Right-padded rows of different lengths: padding never overwrites a row's real keys."""
    window = 4
    attn = GroupedQueryAttention(D, 4, 2, 8, rope=RoPE(8), window=window, rngs=nnx.Rngs(0))
    run = jitted(attn)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(1, 9, D)), jnp.float32)
    alone, _ = run(x, jnp.arange(9)[None], ones((1, 9)))
    prompt = jnp.concatenate([x[:, :6], x[:, :6]])
    segments = jnp.array([[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
    cache = attn.empty_cache(2, window, rolling=True)
    _, cache = run(prompt, jnp.broadcast_to(jnp.arange(6), (2, 6)), segments, cache=cache)
    for step in range(3):  # row 0 continues at position 2, row 1 at 6
        tokens = jnp.concatenate([x[:, 2 + step : 3 + step], x[:, 6 + step : 7 + step]])
        out, cache = run(tokens, jnp.array([[2 + step], [6 + step]]), ones((2, 1)), cache=cache)
        np.testing.assert_allclose(out[0, 0], alone[0, 2 + step], atol=1e-5)
        np.testing.assert_allclose(out[1, 0], alone[0, 6 + step], atol=1e-5)


def test_attention_under_jit_grad_and_vmap():
    attn = GroupedQueryAttention(D, 4, 2, 8, rope=RoPE(8), rngs=nnx.Rngs(0))
    graphdef, params = nnx.split(attn)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(B, T, D)), jnp.float32)
    positions, segments = jnp.broadcast_to(jnp.arange(T), (B, T)), ones((B, T))

    def f(params, x, positions, segments):
        return nnx.merge(graphdef, params)(x, positions, segments)[0]

    eager = f(params, x, positions, segments)
    np.testing.assert_allclose(jax.jit(f)(params, x, positions, segments), eager, atol=1e-5)
    per_row = jax.vmap(lambda *a: f(params, *(t[None] for t in a))[0])(x, positions, segments)
    np.testing.assert_allclose(per_row, eager, atol=1e-5)
    grads = jax.grad(lambda p: f(p, x, positions, segments).sum())(params)
    assert all(float(jnp.abs(g).sum()) > 0 for g in jax.tree.leaves(grads))


# --------------------------------------------------------------------------- multi-head latent attention

MLA_SIZES = dict(kv_lora_rank=6, qk_nope_head_dim=8, qk_rope_head_dim=4, v_head_dim=5)


def mla_reference(attn: MultiHeadLatentAttention, x, positions, visible=None):
    """DeepSeek-V2's MLA equations in float64 numpy (causal, one segment; `visible` [B, T, T]:
    the keys each query may see, default the causal ones)."""
    w = lambda linear: np.asarray(linear.weight[...], np.float64)
    rank, nope, rope_dim = attn.kv_lora_rank, attn.qk_nope_head_dim, attn.qk_rope_head_dim
    x = np.asarray(x, np.float64)
    if attn.q_down is None:
        query = np.einsum("btd,dhk->bthk", x, w(attn.q_up))
    else:
        c_q = reference.rms_norm(x @ w(attn.q_down), np.asarray(attn.q_norm.scale[...]), 1e-6)
        query = np.einsum("btr,rhk->bthk", c_q, w(attn.q_up))
    compressed = x @ w(attn.kv_down)
    c_kv = reference.rms_norm(compressed[..., :rank], np.asarray(attn.kv_norm.scale[...]), 1e-6)
    k_rope = reference.rope(compressed[..., None, rank:], positions)  # [B, T, 1, dr]
    q_rope = reference.rope(query[..., nope:], positions)
    kv = np.einsum("btr,rhk->bthk", c_kv, w(attn.kv_up))
    heads = query.shape[2]
    q = np.concatenate([query[..., :nope], q_rope], -1)
    k = np.concatenate([kv[..., :nope], np.repeat(k_rope, heads, axis=2)], -1)
    visible = reference.causal_mask(*x.shape[:2]) if visible is None else visible
    out = reference.attention(q, k, kv[..., nope:], visible, scale=(nope + rope_dim) ** -0.5)
    return np.einsum("bthv,hvd->btd", out, w(attn.o))


def indexer_selection(attn: MultiHeadLatentAttention, x, positions) -> np.ndarray:
    """DeepSeek-V3.2's lightning indexer in float64 numpy: bool [B, T, T], each query's top_k
    causal keys by sum_h w_h relu(q_h . k / sqrt(Di)), w = x W_w / sqrt(Hi)."""
    index = attn.indexer
    w = lambda linear: np.asarray(linear.weight[...], np.float64)
    x = np.asarray(x, np.float64)
    c_q = reference.rms_norm(x @ w(attn.q_down), np.asarray(attn.q_norm.scale[...]), 1e-6)
    q = reference.rope(np.einsum("btr,rhk->bthk", c_q, w(index.q)), positions, rotary_dims=attn.qk_rope_head_dim)
    k = x @ w(index.k)
    k = (k - k.mean(-1, keepdims=True)) / np.sqrt(k.var(-1, keepdims=True) + 1e-6)
    k = k * np.asarray(index.k_norm.scale[...]) + np.asarray(index.k_norm.bias[...])
    k = reference.rope(k[:, :, None], positions, rotary_dims=attn.qk_rope_head_dim)[:, :, 0]
    heads, head_dim = q.shape[2], q.shape[3]
    weights = x @ w(index.head_weights) / np.sqrt(heads)
    scores = np.einsum("bth,bths->bts", weights, np.maximum(np.einsum("bthd,bsd->bths", q, k) / np.sqrt(head_dim), 0))
    causal = reference.causal_mask(*x.shape[:2])
    selected = np.zeros_like(causal)
    for b, t in np.ndindex(*causal.shape[:2]):
        seen = np.flatnonzero(causal[b, t])
        selected[b, t, seen[np.argsort(-scores[b, t, seen], kind="stable")[: index.top_k]]] = True
    return selected


@pytest.mark.parametrize("q_lora_rank", [None, 7])
def test_mla_matches_the_paper_and_its_absorbed_cache_matches_the_naive_form(q_lora_rank):
    attn = MultiHeadLatentAttention(D, 4, **MLA_SIZES, q_lora_rank=q_lora_rank, rope=RoPE(4), rngs=nnx.Rngs(0))
    run = jitted(attn)
    x = jnp.asarray(np.random.default_rng(3).normal(size=(B, T, D)), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    full, _ = run(x, positions)
    np.testing.assert_allclose(full, mla_reference(attn, x, np.asarray(positions)), atol=1e-4)
    cache = attn.empty_cache(B, 16)
    assert {name: value.shape for name, value in cache.entries.items()} == {"latent": (B, 16, 6), "rope_key": (B, 16, 4)}
    outs = []
    for start, stop in [(0, 3), (3, 4), (4, 7)]:
        out, cache = run(x[:, start:stop], positions[:, start:stop], jnp.ones((B, stop - start), jnp.int32), cache=cache)
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


def test_sparse_attention_attends_to_the_indexers_top_k_and_caches_its_keys():
    attn = MultiHeadLatentAttention(D, 4, **MLA_SIZES, q_lora_rank=7, rope=RoPE(4), indexer=(3, 6, 3), rngs=nnx.Rngs(0))
    run = jitted(attn)
    x = jnp.asarray(np.random.default_rng(4).normal(size=(B, T, D)), jnp.float32)
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    full, _ = run(x, positions)
    selected = indexer_selection(attn, x, np.asarray(positions))
    assert (selected.sum(-1) == np.minimum(np.arange(T) + 1, 3)).all()  # 3 keys once 3 are visible
    np.testing.assert_allclose(full, mla_reference(attn, x, np.asarray(positions), selected), atol=1e-4)
    dense = mla_reference(attn, x, np.asarray(positions))  # the same layer attending to every causal key
    assert np.abs(dense[:, 3:] - np.asarray(full)[:, 3:]).max() > 1e-3
    cache = attn.empty_cache(B, 16)
    assert cache.entries["index_key"].shape == (B, 16, 6)
    outs = []
    for start, stop in [(0, 3), (3, 4), (4, 7)]:
        out, cache = run(x[:, start:stop], positions[:, start:stop], jnp.ones((B, stop - start), jnp.int32), cache=cache)
        outs.append(out)
    np.testing.assert_allclose(jnp.concatenate(outs, axis=1), full, atol=1e-5)


# --------------------------------------------------------------------------- the SelfAttention contract

KIND_SETTINGS = {"gqa": {}, "mla": MLA_SIZES}  # what each self-attention kind needs besides small_config's


def test_every_kind_a_config_can_name_is_checked():
    """The kinds below are those of the table attention.kind takes its names from."""
    [names] = typing.get_type_hints(AttentionConfig, include_extras=True)["kind"].__metadata__
    assert set(names.allowed()) == set(KIND_SETTINGS)


def parameters(function) -> list:
    """What a caller relies on in a signature: each parameter's name, kind (positional or keyword) and default."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("kind", sorted(KIND_SETTINGS))
def test_every_self_attention_kind_meets_the_contract(small_config, kind):
    """A model's self-attention layers, of every kind a config can name, are SelfAttentions: the
    names exist, the signatures are the protocol's, and `window` is each layer's own."""
    attention = {"kind": kind, "layer_pattern": ["local", "global"], "window": 3, **KIND_SETTINGS[kind]}
    model = models.build(small_config(num_layers=2, attention=attention))
    module = model.bind(model.abstract_params)
    layers = [node for path, node in nnx.iter_graph(module) if path and path[-1] == "attention"]
    assert sorted(layer.window or 0 for layer in layers) == [0, 3]  # the global layer's window is None
    for layer in layers:
        assert isinstance(layer, SelfAttention)
        assert parameters(type(layer).__call__) == parameters(SelfAttention.__call__)
        assert parameters(type(layer).empty_cache) == parameters(SelfAttention.empty_cache)


def test_cross_attention_is_not_a_self_attention():
    """isinstance tells them apart: cross-attention has no window and keeps no cache of its own."""
    assert not isinstance(CrossAttention(D, 4, 2, 8, rngs=nnx.Rngs(0)), SelfAttention)
