"""The linear maps and norms of the attention modules, built in one place.

`Projections` makes a module's Linear layers and RMSNorms with its dtypes, rngs and
norm eps, and its output projection [H, Dv] -> D. `HeadProjections` is the base of the
modules with H query and K key/value heads of size Dh (GroupedQueryAttention,
CrossAttention): q, k, v, o with optional biases, and optional QK-norm. The attribute
names are the parameter paths checkpoints and the Hugging Face mappings use.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
from flax import nnx

from zoo.layers.linear import Linear
from zoo.layers.norms import RMSNorm


@dataclasses.dataclass(frozen=True)
class Projections:
    """Builds one module's Linear layers and RMSNorms: its dtypes, its rngs and its norms' eps."""

    dtype: jax.typing.DTypeLike
    param_dtype: jax.typing.DTypeLike
    rngs: nnx.Rngs
    norm_eps: float = 1e-6

    def linear(
        self, in_shape: int | Sequence[int], out_shape: int | Sequence[int], axes: Sequence[str], *, bias: bool = False
    ) -> Linear:
        """A Linear [..., *in_shape] -> [..., *out_shape] with weight axes `axes` (see Linear)."""
        return Linear(
            in_shape, out_shape, axes, bias=bias, dtype=self.dtype, param_dtype=self.param_dtype, rngs=self.rngs
        )

    def norm(self, dim: int, axis: str) -> RMSNorm:
        """An RMSNorm over a last dim of size `dim`, whose scale has logical axis `axis`."""
        return RMSNorm(dim, eps=self.norm_eps, axis=axis, dtype=self.dtype, param_dtype=self.param_dtype)

    def output(self, num_heads: int, head_dim: int, dim: int, *, bias: bool = False) -> Linear:
        """The output projection: heads [B, T, H, head_dim] -> [B, T, dim], weight [H, head_dim, dim]."""
        return self.linear((num_heads, head_dim), dim, ("heads", "head_dim", "embed"), bias=bias)


class HeadProjections(nnx.Module):
    """The projections of attention with H query heads and K key/value heads of size Dh.

    q: [B, T, D] -> [B, T, H, Dh]; k, v: [B, S, D] -> [B, S, K, Dh]; o: [B, T, H, Dh] ->
    [B, T, D]. `qkv_bias`: biases on q, k and v; `out_bias`: on o. `qk_norm`: an RMSNorm
    over Dh of each query and key head (q_norm, k_norm), applied by `queries` and
    `keys_values` (before any RoPE).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        num_kv_heads: int,
        head_dim: int,
        *,
        qkv_bias: bool,
        out_bias: bool,
        qk_norm: bool,
        make: Projections,
    ):
        self.q = make.linear(dim, (num_heads, head_dim), ("embed", "heads", "head_dim"), bias=qkv_bias)
        self.k = make.linear(dim, (num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), bias=qkv_bias)
        self.v = make.linear(dim, (num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), bias=qkv_bias)
        self.o = make.output(num_heads, head_dim, dim, bias=out_bias)
        self.q_norm = make.norm(head_dim, "head_dim") if qk_norm else None
        self.k_norm = make.norm(head_dim, "head_dim") if qk_norm else None
        self.head_dim, self.num_kv_heads = head_dim, num_kv_heads

    def queries(self, x: jax.Array) -> jax.Array:
        """x [B, T, D] -> the query heads [B, T, H, Dh], QK-normed if the module is."""
        q = self.q(x)
        return q if self.q_norm is None else self.q_norm(q)

    def keys_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, S, D] -> the key and value heads [B, S, K, Dh], keys QK-normed if the module is."""
        k, v = self.k(x), self.v(x)
        return (k if self.k_norm is None else self.k_norm(k)), v
