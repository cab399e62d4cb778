"""The linear maps and norms of the attention modules, built in one place.

`Projections` makes a module's Linear layers and RMSNorms with its dtypes, rngs and
norm eps, and its output projection [H, Dv] -> D. `HeadProjections` is the base of the
modules with H query and K key/value heads of size Dh (GroupedQueryAttention,
CrossAttention): q, k, v, o with optional biases, optional QK-norm and q/k/v clipping. The attribute
names are the parameter paths checkpoints and the Hugging Face mappings use.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, Sequence

import jax
import jax.numpy as jnp
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

    def norm(self, dim: int | Sequence[int], axis: str | Sequence[str]) -> RMSNorm:
        """An RMSNorm over a last dim of size `dim`, whose scale has logical axis `axis` (or over
        the last dims of sizes `dim`, with axes `axis`)."""
        return RMSNorm(dim, eps=self.norm_eps, axis=axis, dtype=self.dtype, param_dtype=self.param_dtype)

    def output(self, num_heads: int, head_dim: int, dim: int, *, bias: bool = False) -> Linear:
        """The output projection: heads [B, T, H, head_dim] -> [B, T, dim], weight [H, head_dim, dim]."""
        return self.linear((num_heads, head_dim), dim, ("heads", "head_dim", "embed"), bias=bias)


class HeadProjections(nnx.Module):
    """The projections of attention with H query heads and K key/value heads of size Dh.

    q: [B, T, D] -> [B, T, H, Dh]; k, v: [B, S, D] -> [B, S, K, Dh]; o: [B, T, H, Dh] ->
    [B, T, D]. `qkv_bias`: biases on q, k and v; `out_bias`: on o. `qk_norm`: an RMSNorm
    (q_norm, k_norm) over Dh of each query and key head, or with `qk_norm_over="projection"`
    over all of a token's query heads [H, Dh] and all its key heads [K, Dh] (OLMo 2), applied
    by `queries` and `keys_values` (before any RoPE). `clip_qkv`: q, k and v clamped to
    [-clip_qkv, clip_qkv] after that (OLMo).
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
        qk_norm_over: Literal["head", "projection"] = "head",
        clip_qkv: float | None = None,
    ):
        if qk_norm_over not in ("head", "projection"):
            raise ValueError(f"qk_norm_over must be 'head' or 'projection', got {qk_norm_over!r}")
        self.q = make.linear(dim, (num_heads, head_dim), ("embed", "heads", "head_dim"), bias=qkv_bias)
        self.k = make.linear(dim, (num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), bias=qkv_bias)
        self.v = make.linear(dim, (num_kv_heads, head_dim), ("embed", "kv_heads", "head_dim"), bias=qkv_bias)
        self.o = make.output(num_heads, head_dim, dim, bias=out_bias)
        whole = qk_norm_over == "projection"
        self.q_norm = self._qk_norm(make, num_heads, "heads", head_dim, whole) if qk_norm else None
        self.k_norm = self._qk_norm(make, num_kv_heads, "kv_heads", head_dim, whole) if qk_norm else None
        self.head_dim, self.num_kv_heads, self.clip_qkv = head_dim, num_kv_heads, clip_qkv

    @staticmethod
    def _qk_norm(make: Projections, heads: int, heads_axis: str, head_dim: int, whole: bool) -> RMSNorm:
        """An RMSNorm over Dh of each head, or over [heads, Dh] together when `whole`."""
        return make.norm((heads, head_dim), (heads_axis, "head_dim")) if whole else make.norm(head_dim, "head_dim")

    def queries(self, x: jax.Array) -> jax.Array:
        """x [B, T, D] -> the query heads [B, T, H, Dh], QK-normed and clipped if the module is."""
        q = self.q(x)
        return self._clip(q if self.q_norm is None else self.q_norm(q))

    def keys_values(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x [B, S, D] -> the key and value heads [B, S, K, Dh], keys QK-normed if the module
        is, both clipped if it is."""
        k, v = self.k(x), self.v(x)
        return self._clip(k if self.k_norm is None else self.k_norm(k)), self._clip(v)

    def _clip(self, x: jax.Array) -> jax.Array:
        return x if self.clip_qkv is None else jnp.clip(x, -self.clip_qkv, self.clip_qkv)
