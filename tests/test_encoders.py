"""Cross-attention, encoder-only and encoder-decoder models against written-out references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import reference
from zoo import config, models
from zoo.generate import Generator
from zoo.layers.attention.cross import CrossAttention

SIZES = dict(vocab_size=53, d_model=32, num_layers=1, num_heads=4, num_kv_heads=2, ffn_dim=48, max_seq_len=64)


def model_config(kind, **overrides):
    return config.ModelConfig.from_dict({**SIZES, "kind": kind, "position": {"kind": "none"}, **overrides})


def test_cross_attention_matches_the_formula():
    attn = CrossAttention(32, 4, 2, 8, rngs=nnx.Rngs(0))
    rng = np.random.default_rng(0)
    x, memory = rng.normal(size=(2, 5, 32)).astype(np.float32), rng.normal(size=(2, 7, 32)).astype(np.float32)
    memory_segments = np.array([[1, 1, 1, 1, 1, 0, 0], [1, 1, 2, 2, 2, 2, 2]])
    segments = np.array([[1, 1, 1, 1, 1], [1, 1, 2, 2, 2]])
    out = attn(jnp.asarray(x), attn.memory_cache(jnp.asarray(memory), jnp.asarray(memory_segments)), jnp.asarray(segments))
    w = lambda linear: np.asarray(linear.weight[...], np.float64)
    q = np.einsum("btd,dhk->bthk", x, w(attn.q))
    k, v = (np.einsum("bsd,dhk->bshk", memory, w(p)) for p in (attn.k, attn.v))
    visible = segments[:, :, None] == memory_segments[:, None, :]
    expected = np.einsum("bthk,hkd->btd", reference.attention(q, k, v, visible), w(attn.o))
    np.testing.assert_allclose(out, expected, atol=1e-5)


def test_encoder_sees_both_directions_and_separates_segments():
    model = models.build(model_config("encoder", num_layers=2))
    params = jax.jit(model.init)(jax.random.key(0))
    apply = jax.jit(model.apply)
    tokens = jax.random.randint(jax.random.key(1), (1, 10), 0, 53)
    changed = tokens.at[0, 9].set((tokens[0, 9] + 1) % 53)
    assert not np.allclose(apply(params, tokens).logits[0, 0], apply(params, changed).logits[0, 0])  # the last token reaches the first
    segments = jnp.array([[1] * 4 + [2] * 6])
    packed = apply(params, tokens, segment_ids=segments).logits
    np.testing.assert_allclose(packed[:, :4], apply(params, tokens[:, :4]).logits, atol=1e-5)
    np.testing.assert_allclose(packed[:, 4:], apply(params, tokens[:, 4:]).logits, atol=1e-5)
    with pytest.raises(ValueError, match="an encoder attends in both directions and keeps no cache"):
        model.apply(params, tokens, cache={})
    with pytest.raises(ValueError, match="encoder-only models keep no cache and do not generate"):
        model.init_cache(1, 8)


def test_longformer_style_global_tokens_in_an_encoder():
    """A windowed encoder: only a global token's output depends on tokens past the window."""
    model = models.build(model_config("encoder", attention={"layer_pattern": ["local"], "window": 2}))
    params = jax.jit(model.init)(jax.random.key(0))
    apply = jax.jit(model.apply)
    tokens = jax.random.randint(jax.random.key(1), (1, 12), 0, 53)
    changed = tokens.at[0, 11].set((tokens[0, 11] + 1) % 53)
    global_tokens = jnp.zeros((1, 12), bool).at[0, 0].set(True)
    plain = lambda t: apply(params, t).logits
    with_global = lambda t: apply(params, t, global_tokens=global_tokens).logits
    np.testing.assert_allclose(plain(changed)[0, :9], plain(tokens)[0, :9], atol=1e-6)  # the window hides token 11
    assert not np.allclose(with_global(changed)[0, 0], with_global(tokens)[0, 0])  # the global token sees it
    np.testing.assert_allclose(with_global(changed)[0, 1:9], with_global(tokens)[0, 1:9], atol=1e-6)
    decoder = models.build(model_config("decoder", attention={"layer_pattern": ["local"], "window": 2}))
    with pytest.raises(ValueError, match="global tokens need the whole sequence at once"):
        decoder.apply(jax.jit(decoder.init)(jax.random.key(0)), tokens, cache=decoder.init_cache(1, 16), global_tokens=global_tokens)


def encoder_decoder_reference(p, encoder_tokens, tokens, eps):
    """A one-layer-each pre-norm encoder-decoder (GQA, SwiGLU, RMSNorm, no positions), written out."""
    def layer(x, weights, causal, memory=None):
        def attention(h, source, w, causal):
            q = np.einsum("btd,dhk->bthk", h, w["q"]["weight"])
            k, v = (np.einsum("bsd,dhk->bshk", source, w[n]["weight"]) for n in ("k", "v"))
            t, s = h.shape[1], source.shape[1]
            visible = np.broadcast_to(np.tril(np.ones((t, s), bool)) if causal else np.ones((t, s), bool), (h.shape[0], t, s))
            return np.einsum("bthk,hkd->btd", reference.attention(q, k, v, visible), w["o"]["weight"])

        h = reference.rms_norm(x, weights["attention_norm"]["scale"], eps)
        x = x + attention(h, h, weights["attention"], causal)
        if memory is not None:
            h = reference.rms_norm(x, weights["cross_norm"]["scale"], eps)
            x = x + attention(h, memory, weights["cross_attention"], False)
        h = reference.rms_norm(x, weights["ffn_norm"]["scale"], eps)
        gate = h @ weights["ffn"]["gate"]["weight"]
        return x + (gate / (1 + np.exp(-gate)) * (h @ weights["ffn"]["up"]["weight"])) @ weights["ffn"]["down"]["weight"]

    first = lambda tree: jax.tree.map(lambda a: a[0], tree)
    table = p["embedder"]["embedding"]["table"]
    memory = layer(table[encoder_tokens], first(p["encoder"]["layers"]), causal=False)
    memory = reference.rms_norm(memory, p["encoder"]["final_norm"]["scale"], eps)
    x = layer(table[tokens], first(p["decoder"]["layers"]), causal=True, memory=memory)
    return reference.rms_norm(x, p["decoder"]["final_norm"]["scale"], eps) @ p["head"]["unembed"]["weight"]


def test_encoder_decoder_matches_reference_and_decodes_with_its_cache():
    model = models.build(model_config("encoder_decoder"))
    params = jax.jit(model.init)(jax.random.key(2))
    encoder_tokens = np.asarray(jax.random.randint(jax.random.key(3), (2, 9), 0, 53))
    tokens = np.asarray(jax.random.randint(jax.random.key(4), (2, 6), 0, 53))
    apply = jax.jit(model.apply)
    full = apply(params, tokens, encoder_tokens=encoder_tokens).logits
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), nnx.to_pure_dict(params))
    np.testing.assert_allclose(full, encoder_decoder_reference(p, encoder_tokens, tokens, model.config.norm_eps), atol=1e-4)

    cache = model.init_cache(2, 16)
    out = apply(params, tokens[:, :2], cache=cache, encoder_tokens=encoder_tokens)
    first, cache = out.logits, out.cache
    steps = [first]
    for t in range(2, 6):  # the memory now comes from the cache
        out = apply(params, tokens[:, t : t + 1], cache=cache)
        logits, cache = out.logits, out.cache
        steps.append(logits)
    np.testing.assert_allclose(jnp.concatenate(steps, axis=1), full, atol=1e-5)
    with pytest.raises(ValueError, match="needs encoder_tokens"):
        model.apply(params, tokens)


def test_encoder_decoder_generates_each_row_as_alone():
    model = models.build(model_config("encoder_decoder", num_layers=2, encoder_layers=1))
    generator = Generator(model, jax.jit(model.init)(jax.random.key(5)))
    sources = [[5, 6, 7, 8, 9, 10], [11, 12], [13, 14, 15]]
    starts = [[1]] * 3
    batched = generator(starts, encoder_prompts=sources, max_new_tokens=8, seed=2)
    for source, result in zip(sources, batched):
        assert generator([[1]], encoder_prompts=[source], max_new_tokens=8, seed=2)[0] == result
    assert batched[0].tokens != batched[1].tokens  # the encoder input matters
    with pytest.raises(ValueError, match="this encoder_decoder model needs encoder prompts"):
        generator(starts, max_new_tokens=3)
    with pytest.raises(ValueError, match="2 encoder prompts for 3 prompts; give one each"):
        generator(starts, encoder_prompts=sources[:2], max_new_tokens=3)


def test_bad_encoder_configs():
    with pytest.raises(config.ConfigError, match="encoder_layers: is only for encoder_decoder models, not 'decoder'"):
        model_config("decoder", encoder_layers=2)
    with pytest.raises(config.ConfigError, match="block: 'parallel' has no place for cross-attention"):
        model_config("encoder_decoder", block="parallel")
