"""zoo's assembled decoder computes the same logits as the one-file reference (zoo/models/reference.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from zoo import config, models
from zoo.models import reference


def reference_params(zoo_params) -> dict:
    """zoo's decoder params (an nnx.State) as reference.py's nested dict.

    The one place that knows zoo's param paths: embedder/embedding/table [V, D],
    head/unembed/weight [D, V] (absent when tied), tower/final_norm/scale [D], and under
    tower/layers/ (stacked: a leading [L] axis) attention_norm/scale,
    attention/{q,k,v,o}/weight, ffn_norm/scale, ffn/{gate,up,down}/weight.
    """
    p = nnx.to_pure_dict(zoo_params)
    stack = p["tower"]["layers"]
    per_layer = {
        "attn_norm": stack["attention_norm"]["scale"],
        "q": stack["attention"]["q"]["weight"],
        "k": stack["attention"]["k"]["weight"],
        "v": stack["attention"]["v"]["weight"],
        "o": stack["attention"]["o"]["weight"],
        "mlp_norm": stack["ffn_norm"]["scale"],
        "gate": stack["ffn"]["gate"]["weight"],
        "up": stack["ffn"]["up"]["weight"],
        "down": stack["ffn"]["down"]["weight"],
    }
    num_layers = per_layer["q"].shape[0]
    out = {
        "embed": p["embedder"]["embedding"]["table"],
        "final_norm": p["tower"]["final_norm"]["scale"],
        "layers": [{name: w[i] for name, w in per_layer.items()} for i in range(num_layers)],
    }
    if "unembed" in p.get("head", {}):  # a tied head holds no params
        out["unembed"] = p["head"]["unembed"]["weight"]
    return out


def logits_of_zoo(model, params, tokens):
    """zoo's logits [B, T, V]."""
    return jax.jit(model.apply)(params, tokens).logits


def sizes_of(cfg: config.ModelConfig) -> reference.Sizes:
    return reference.Sizes(
        vocab=cfg.vocab_size, d_model=cfg.d_model, layers=cfg.num_layers, heads=cfg.num_heads,
        kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, ffn=cfg.ffn_dim,
        rope_theta=cfg.position.rope_theta, norm_eps=cfg.norm_eps, tie=cfg.tie_embeddings,
    )


def random_params(model, rng: np.random.Generator):
    """zoo params (an nnx.State of model's layout) all noise, norm scales too, so none is a no-op
    ones vector. From numpy, not model.init: nothing to compile, which keeps the test quick."""
    leaves, treedef = jax.tree.flatten(model.abstract_params)
    return jax.tree.unflatten(treedef, [jnp.asarray(0.3 * rng.standard_normal(x.shape), x.dtype) for x in leaves])


CASES = {  # both scan their layers (scan_layers defaults to true)
    "untied": dict(),
    "tied-wide-heads": dict(tie_embeddings=True, head_dim=12),  # H * Dh = 48 != D
}


@pytest.mark.parametrize("overrides", CASES.values(), ids=CASES.keys())
def test_zoo_decoder_matches_reference(overrides, key):
    model_cfg = dict(
        vocab_size=97, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=48, max_seq_len=64,
        norm="rms", norm_eps=1e-5, ffn_activation="silu", ffn_gated=True, position={"kind": "rope", "rope_theta": 500.0},
    )
    cfg = config.ModelConfig.from_dict({**model_cfg, **overrides})
    model = models.build(cfg)
    rng = np.random.default_rng(0)
    params = random_params(model, rng)
    tokens = jnp.asarray(rng.integers(0, cfg.vocab_size, (2, 16)), jnp.int32)
    sizes = sizes_of(cfg)

    zoo_logits = logits_of_zoo(model, params, tokens)
    ref = reference_params(params)
    # reference.init makes the same layout (shapes only; nothing computed)
    shapes = lambda tree: jax.tree.map(lambda x: x.shape, tree)
    assert shapes(ref) == shapes(jax.eval_shape(lambda k: reference.init(sizes, k), key))
    ref_forward = jax.jit(reference.forward, static_argnums=2)
    ref_logits = ref_forward(ref, tokens, sizes)
    assert zoo_logits.shape == ref_logits.shape == (2, 16, cfg.vocab_size)
    assert float(jnp.std(ref_logits)) > 0.1  # not a degenerate comparison
    np.testing.assert_allclose(zoo_logits, ref_logits, rtol=1e-5, atol=1e-5)

    # The comparison is sensitive: scaling the last key/value head's key projection in the last
    # layer (a few dozen weights) moves the logits well past the tolerance.
    ref["layers"][-1]["k"] = ref["layers"][-1]["k"].at[:, -1].multiply(1.5)
    assert np.abs(np.asarray(ref_forward(ref, tokens, sizes) - zoo_logits)).max() > 1e-3

