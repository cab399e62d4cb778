"""The decoder-only model through its functional API: cache, packing, transforms, variants."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference
from zoo import models
from zoo.layers.param import logical_axes


def tokens_for(config, batch=2, length=12, seed=0):
    return jax.random.randint(jax.random.key(seed), (batch, length), 0, config.vocab_size)


@pytest.fixture
def model(small_config):
    return models.build(small_config())


def test_shapes_and_abstract_params_allocate_nothing(model):
    params = jax.jit(model.init)(jax.random.key(0))
    out = model.apply(params, tokens_for(model.config))
    logits, cache = out.logits, out.cache
    assert logits.shape == (2, 12, model.config.vocab_size) and cache is None
    abstract = jax.tree.leaves(model.abstract_params)
    assert all(isinstance(a, jax.ShapeDtypeStruct) for a in abstract)
    assert [a.shape for a in abstract] == [p.shape for p in jax.tree.leaves(params)]


def test_every_parameter_has_logical_axes(model):
    variables = jax.tree.leaves(model.abstract_params, is_leaf=lambda x: isinstance(x, nnx.Variable))
    for variable in variables:
        axes = logical_axes(variable)
        assert len(axes) == len(variable.shape) and all(a is not None for a in axes), (variable, axes)
    stacked = model.abstract_params["tower"]["layers"]["attention"]["q"]["weight"]
    assert logical_axes(stacked) == ("layers", "embed", "heads", "head_dim")


def test_layers_are_initialised_independently(model):
    params = jax.jit(model.init)(jax.random.key(0))
    q = params["tower"]["layers"]["attention"]["q"]["weight"][...]
    assert not np.allclose(q[0], q[1])


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"block": "post_norm", "norm": "layer"},
        {"block": "parallel", "ffn_gated": False, "ffn_activation": "gelu"},
        {"block": "parallel_two_norms", "norm": "layer", "mlp_bias": True, "position": {"rotary_fraction": 0.25}},
        {"block": "sandwich", "embedding_scale": True, "embedding_norm": True, "final_logit_softcap": 5.0},
        {"tie_embeddings": True, "position": {"kind": "none"}},
        {"num_kv_heads": 1, "attention": {"qk_norm": True, "logit_softcap": 20.0, "qkv_bias": True}},
        {"attention": {"layer_pattern": ["local"], "window": 3, "sinks": True}},
        {"attention": {"kernel": "chunked", "sinks": True, "logit_softcap": 10.0}},
        {"num_layers": 3, "attention": {"layer_pattern": ["local", "global", "local"], "window": [3, 5]}},
        {  # Gemma 3's 5:1 pattern, local and global layers each with their own RoPE; prefill longer than the window
            "num_layers": 6, "attention": {"layer_pattern": ["local"] * 5 + ["global"], "window": 3},
            "position": {"rope_theta": 1e6, "rope_scaling": "linear", "scaling_factor": 8.0, "local": {"rope_theta": 10.0}},
        },
        {"attention": {"kind": "mla", "kv_lora_rank": 12, "q_lora_rank": 10, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 6}},
        {"attention": {"kind": "mla", "kv_lora_rank": 12, "q_lora_rank": 10, "qk_nope_head_dim": 8, "qk_rope_head_dim": 4, "v_head_dim": 6, "index_heads": 2, "index_head_dim": 8, "index_top_k": 3}},  # DeepSeek sparse attention
        {"position": {"kind": "sinusoidal"}},
        {"position": {"kind": "learned"}, "block": "post_norm", "norm": "layer"},
        {"position": {"kind": "alibi"}, "attention": {"kernel": "chunked"}},
        {"position": {"kind": "relative", "relative_buckets": 8, "relative_max_distance": 6}},
        {"position": {"rope_scaling": "yarn", "scaling_factor": 4.0, "original_max_position": 4}},
        {"num_layers": 3, "moe": {"num_experts": 4, "top_k": 2, "expert_ffn_dim": 16, "shared_ffn_dim": 8, "first_dense": 1}},
        {"moe": {"num_experts": 8, "top_k": 2, "expert_ffn_dim": 16, "router": "sigmoid", "num_groups": 4, "top_groups": 2, "routed_scale": 2.5}},
        {"block": "post_sublayer_norm", "attention": {"qk_norm": True, "qk_norm_over": "projection"}},  # OLMo 2
        {"norm": "layer_without_params", "attention": {"clip_qkv": 0.5}},  # OLMo
        {"attention": {"output_gate": True, "qk_norm": True}, "position": {"rotary_fraction": 0.25}},  # Qwen3-Next's gated attention
        {"attention": {"layer_pattern": ["chunked", "global"], "chunk_size": 3, "layer_rope": [True, False], "qk_l2_norm": True, "temperature_tuning": True, "temperature_floor": 2}},
    ],
)
def test_cached_decode_equals_full_forward(small_config, overrides):
    model = models.build(small_config(**overrides))
    params = jax.jit(model.init)(jax.random.key(0))
    tokens = tokens_for(model.config)
    apply = jax.jit(model.apply)
    full = apply(params, tokens).logits
    cache = model.init_cache(batch=2, length=16)
    out = apply(params, tokens[:, :5], cache=cache)
    prefill, cache = out.logits, out.cache
    steps = [prefill]
    for t in range(5, tokens.shape[1]):  # one token at a time, positions from the cache
        out = apply(params, tokens[:, t : t + 1], cache=cache)
        logits, cache = out.logits, out.cache
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)


def test_layer_patterns_scan_over_groups_with_their_own_caches(small_config):
    pattern = {"layer_pattern": ["local", "local", "global", "global"], "window": [4, 6]}  # per-layer windows
    model = models.build(small_config(num_layers=4, attention=pattern))
    q = model.abstract_params["tower"]["layers"]["blocks"][0]["attention"]["q"]["weight"]
    assert q.shape[0] == 1 and logical_axes(q)[0] == "layers"  # one group of four blocks
    cache = model.init_cache(batch=2, length=32)
    (segment,) = cache  # one segment: a tuple with one cache per block of the group
    assert [c.length for c in segment] == [4, 6, 32, 32] and [c.rolling for c in segment] == [True, True, False, False]


def test_packed_segments_equal_separate_sequences(model):
    params = jax.jit(model.init)(jax.random.key(0))
    apply = jax.jit(model.apply)
    a, b = tokens_for(model.config, 1, 5, seed=1), tokens_for(model.config, 1, 7, seed=2)
    packed = jnp.concatenate([a, b], axis=1)
    segments = jnp.array([[1] * 5 + [2] * 7])
    positions = jnp.array([list(range(5)) + list(range(7))])
    logits = apply(params, packed, positions, segments).logits
    np.testing.assert_allclose(logits[:, :5], apply(params, a).logits, atol=1e-5)
    np.testing.assert_allclose(logits[:, 5:], apply(params, b).logits, atol=1e-5)
    np.testing.assert_allclose(apply(params, packed, segment_ids=segments).logits, logits, atol=1e-6)  # positions implied


def test_padding_does_not_change_real_tokens(model):
    params = jax.jit(model.init)(jax.random.key(0))
    tokens = tokens_for(model.config, 1, 8)
    padded = jnp.concatenate([tokens, jnp.zeros((1, 4), tokens.dtype)], axis=1)
    segments = jnp.array([[1] * 8 + [0] * 4])
    logits = model.apply(params, padded, segment_ids=segments).logits
    np.testing.assert_allclose(logits[:, :8], model.apply(params, tokens).logits, atol=1e-5)


def test_scan_unroll_and_remat_agree(small_config):
    scanned = models.build(small_config())
    params = jax.jit(scanned.init)(jax.random.key(0))
    tokens = tokens_for(scanned.config)

    def loss(model):
        return lambda p: jnp.mean(jax.nn.log_softmax(model.apply(p, tokens).logits)[..., 0])

    reference_grads = jax.jit(jax.grad(loss(scanned)))(params)
    for overrides in ({"scan_layers": False}, {"remat": "full"}, {"remat": "dots"}):
        variant = models.build(small_config(**overrides))
        grads = jax.jit(jax.grad(loss(variant)))(params)  # same parameter layout
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), grads, reference_grads)


def test_vmap_over_rows_equals_batch(model):
    params = jax.jit(model.init)(jax.random.key(0))
    tokens = tokens_for(model.config, batch=3)
    per_row = jax.vmap(lambda row: model.apply(params, row[None]).logits[0])(tokens)
    np.testing.assert_allclose(per_row, model.apply(params, tokens).logits, atol=1e-5)


def test_bfloat16_compute_with_float32_params(small_config):
    model = models.build(small_config(dtype="bfloat16"))
    params = jax.jit(model.init)(jax.random.key(0))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    logits = model.apply(params, tokens_for(model.config)).logits
    assert logits.dtype == jnp.bfloat16
    full = models.build(small_config()).apply(params, tokens_for(model.config)).logits
    np.testing.assert_allclose(np.asarray(logits, np.float32), full, atol=0.1)


def layer_attention(layer, h, positions):
    """One layer's self-attention [B, T, D] -> [B, T, D] by the formula references (float64 params)."""
    q = reference.rope(np.einsum("btd,dhk->bthk", h, layer["attention"]["q"]["weight"]), positions)
    k = reference.rope(np.einsum("btd,dhk->bthk", h, layer["attention"]["k"]["weight"]), positions)
    v = np.einsum("btd,dhk->bthk", h, layer["attention"]["v"]["weight"])
    attn = reference.attention(q, k, v, reference.causal_mask(*h.shape[:2]))
    return np.einsum("bthk,hkd->btd", attn, layer["attention"]["o"]["weight"])


def layer_swiglu(layer, h):
    gate = h @ layer["ffn"]["gate"]["weight"]
    return (gate / (1 + np.exp(-gate)) * (h @ layer["ffn"]["up"]["weight"])) @ layer["ffn"]["down"]["weight"]


def one_layer(model, seed):
    """(params, float64 pure dict of them, the layer's params, 6 tokens, their embeddings) of a 1-layer model,
    norm scales random so that none is a no-op."""
    params = jax.jit(model.init)(jax.random.key(seed))
    rng = np.random.default_rng(seed)
    noisy = lambda path, a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape), a.dtype) if "norm" in str(path) else a
    params = jax.tree_util.tree_map_with_path(noisy, params)
    tokens = tokens_for(model.config, 1, 6)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(params))
    layer = jax.tree.map(lambda a: a[0], p["tower"]["layers"])
    return params, p, layer, tokens, p["embedder"]["embedding"]["table"][np.asarray(tokens)]


def test_pre_norm_block_matches_reference(small_config):
    """One Llama-style layer written out with the formula references."""
    model = models.build(small_config(num_layers=1, num_kv_heads=2))
    params, p, layer, tokens, x = one_layer(model, 3)
    eps = model.config.norm_eps
    positions = np.arange(6)[None]
    x = x + layer_attention(layer, reference.rms_norm(x, layer["attention_norm"]["scale"], eps), positions)
    x = x + layer_swiglu(layer, reference.rms_norm(x, layer["ffn_norm"]["scale"], eps))
    x = reference.rms_norm(x, p["tower"]["final_norm"]["scale"], eps)
    expected = x @ p["head"]["unembed"]["weight"]
    np.testing.assert_allclose(model.apply(params, tokens).logits, expected, atol=1e-4)


def test_post_sublayer_norm_block_matches_reference(small_config):
    """OLMo 2's layer: h = x + norm(attn(x)), then h + norm(mlp(h)); no norm before a sublayer."""
    model = models.build(small_config(num_layers=1, block="post_sublayer_norm"))
    params, p, layer, tokens, x = one_layer(model, 4)
    assert set(layer) == {"attention", "attention_post_norm", "ffn", "ffn_post_norm"}
    eps = model.config.norm_eps
    x = x + reference.rms_norm(layer_attention(layer, x, np.arange(6)[None]), layer["attention_post_norm"]["scale"], eps)
    x = x + reference.rms_norm(layer_swiglu(layer, x), layer["ffn_post_norm"]["scale"], eps)
    x = reference.rms_norm(x, p["tower"]["final_norm"]["scale"], eps)
    np.testing.assert_allclose(model.apply(params, tokens).logits, x @ p["head"]["unembed"]["weight"], atol=1e-4)
