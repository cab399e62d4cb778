"""LoRA adapters: each adapted layer equals its base with the merged weight W + (alpha / r) A B."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo import config
from zoo.layers import lora
from zoo.layers.linear import Linear
from zoo.models import build

SMALL = dict(vocab_size=64, d_model=16, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=24, max_seq_len=32)
MOE = {"moe": {"num_experts": 4, "top_k": 2, "expert_ffn_dim": 8, "shared_ffn_dim": 8}}
MLA = {"attention": {"kind": "mla", "kv_lora_rank": 8, "q_lora_rank": 12, "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 4}}
TOKENS = jnp.asarray(np.random.default_rng(0).integers(0, 64, size=(2, 7)), jnp.int32)


def model_config(**fields):
    return config.ModelConfig.from_dict(SMALL | fields)


def randomized(params, seed=1):
    """params with every adapter factor random (B starts at zero, which would hide mistakes)."""
    rng = np.random.default_rng(seed)

    def fill(variable):
        if isinstance(variable, nnx.LoRAParam):
            return variable.replace(jnp.asarray(rng.normal(size=variable.shape) * 0.3, jnp.float32))
        return variable

    return jax.tree.map(fill, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


@pytest.mark.parametrize(
    "fields, targets",
    [
        ({}, ("attention.*", "ffn.*", "embedding")),  # tied embeddings: the lookup and the output alike
        ({"tie_embeddings": False}, ("embedding", "unembed", "attention.o")),
        (MOE, ("ffn.*",)),  # experts (grouped matmuls), shared experts
        (MLA, ("attention.*",)),
    ],
    ids=["dense-tied", "untied", "moe", "mla"],
)
def test_an_adapted_model_equals_its_base_with_merged_weights(fields, targets):
    cfg = model_config(**fields)
    adapted = build(cfg, config.LoraConfig(rank=2, alpha=3.0, targets=targets))
    params = randomized(adapted.init(jax.random.key(0)))
    logits = adapted.apply(params, TOKENS).logits
    module = adapted.bind(params)
    names = lora.merge(module)
    assert names and all(any(lora.matches(n, t) for t in targets) for n in names)
    expected = build(cfg).apply(nnx.state(module), TOKENS).logits
    np.testing.assert_allclose(logits, expected, atol=2e-5, rtol=1e-5)


def test_fresh_adapters_leave_the_model_as_it_was():
    cfg = model_config()
    adapted = build(cfg, config.LoraConfig(rank=4))
    params = adapted.init(jax.random.key(3))
    base_params = build(cfg).init(jax.random.key(3))  # the same base weights: adapters draw from another key
    base_only = nnx.split_state(params, nnx.LoRAParam, ...)[1]
    jax.tree.map(np.testing.assert_array_equal, base_only, base_params)
    np.testing.assert_array_equal(adapted.apply(params, TOKENS).logits, build(cfg).apply(base_params, TOKENS).logits)


def test_adapter_shapes_and_axes_follow_the_weight():
    adapted = build(model_config(), config.LoraConfig(rank=3, targets=("attention.q",)))
    a = adapted.abstract_params["tower"]["layers"]["attention"]["q"]["weight_lora"]["a"]
    b = adapted.abstract_params["tower"]["layers"]["attention"]["q"]["weight_lora"]["b"]
    assert a.shape == (2, 16, 3) and a.get_metadata("logical_axes") == ("layers", "embed", "lora_rank")
    assert b.shape == (2, 3, 4, 4) and b.get_metadata("logical_axes") == ("layers", "lora_rank", "heads", "head_dim")


def test_the_mla_decode_path_reads_the_merged_latent_projection():
    """MLA's absorbed decode multiplies by kv_up's weight directly: with an adapter it must be the merged one."""
    cfg = model_config(**MLA)
    adapted = build(cfg, config.LoraConfig(rank=2, targets=("attention.kv_up",)))
    params = randomized(adapted.init(jax.random.key(0)))
    full = adapted.apply(params, TOKENS).logits
    cache = adapted.init_cache(2, 16)
    prefix = adapted.apply(params, TOKENS[:, :6], cache=cache)
    step = adapted.apply(params, TOKENS[:, 6:], cache=prefix.cache)
    np.testing.assert_allclose(step.logits[:, 0], full[:, 6], atol=2e-5, rtol=1e-5)


def test_glob_targets_match_a_name_or_its_end():
    name = "tower.layers.attention.q"
    assert all(lora.matches(name, p) for p in ("attention.q", "*.q", "attention.*", "tower.layers.attention.q", "q"))
    assert not any(lora.matches(name, p) for p in ("ttention.q", "ffn.*", "attention.k"))


def test_targets_that_match_no_weight_and_ranks_too_large_are_refused():
    with pytest.raises(ValueError, match=r"the LoRA target 'atention\.q' matches no weight; weights that take adapters: "):
        build(model_config(), config.LoraConfig(rank=2, targets=("atention.q",)))
    with pytest.raises(ValueError, match=r"LoRA on tower.layers.attention.k: rank 20 exceeds the smaller side of a \[16\] x \[2, 4\] weight"):
        build(model_config(), config.LoraConfig(rank=20, targets=("attention.k",)))


def test_adapter_dropout_scales_kept_inputs_and_averages_to_no_dropout():
    cfg = model_config()
    lora_config = config.LoraConfig(rank=2, dropout=0.5, targets=("attention.q",))
    plain, training = build(cfg, lora_config), build(cfg, lora_config).for_training()
    assert training.dropout and not plain.dropout and build(cfg, config.LoraConfig(rank=2)).for_training().dropout is False
    params = randomized(plain.init(jax.random.key(0)))
    keys = nnx.split_state(training.abstract_params, lora.DropoutKey, ...)[0]
    (key_data,) = jax.tree.leaves(keys)
    assert key_data.shape[0] == 2  # a key for each stacked layer

    def logits(seed):
        drawn = lora.fresh_dropout_keys(keys, jax.random.key(seed))
        return training.apply(nnx.merge_state(params, drawn), TOKENS).logits

    first, second = logits(0), logits(1)
    expected = plain.apply(params, TOKENS).logits  # inference: no dropout
    assert not np.allclose(first, second) and not np.allclose(first, expected)

    # one adapted linear layer: its update is linear in the kept inputs, so over many draws it
    # averages to the update without dropout (kept inputs are scaled by 1 / (1 - rate))
    layer = Linear(16, 8, ("embed", "mlp"), rngs=nnx.Rngs(0))
    lora.attach(layer, 2, 2.0, ("*",), nnx.Rngs(1), dropout=0.5)
    layer.weight_lora.b[...] = jnp.ones((2, 8))
    x = jnp.asarray(np.random.default_rng(2).normal(size=(4, 16)), jnp.float32)
    without = x @ layer.weight[...] + (x @ layer.weight_lora.a[...]) @ layer.weight_lora.b[...]

    def draw(seed):
        layer.weight_lora.dropout_key[...] = jax.random.key_data(jax.random.key(seed))
        return layer(x)

    draws = np.stack([draw(seed) for seed in range(400)])
    assert np.abs(draws[0] - without).max() > 0.1
    np.testing.assert_allclose(draws.mean(0), without, atol=0.15 * np.abs(draws[0] - without).max())
