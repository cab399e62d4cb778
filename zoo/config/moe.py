"""The [model.moe] section: which layers are mixtures of experts, their router, dispatch and losses."""

from __future__ import annotations

import dataclasses
from typing import Annotated

from zoo.config.section import ConfigError, Names, Section, require_non_negative, require_positive


@dataclasses.dataclass(frozen=True, kw_only=True)
class MoEConfig(Section):
    """Mixture-of-experts feed-forwards (see zoo/layers/moe): which layers, the router, dispatch, losses."""

    num_experts: int
    top_k: int = 2
    expert_ffn_dim: int
    router: Annotated[str, Names("zoo.layers.moe.router:ROUTERS")] = "softmax"
    renormalize: bool = True  # chosen weights sum to one (Mixtral, DeepSeek-V3)
    num_groups: int = 1  # group-limited routing (DeepSeek): tokens first pick top_groups of num_groups
    top_groups: int = 1
    routed_scale: float = 1.0  # routed output multiplier (DeepSeek-V3: 2.5)
    capacity_factor: float | None = None  # None: dropless; else slots per expert = factor x even share
    shared_ffn_dim: int = 0  # width of the shared experts every token also passes through (0: none)
    shared_gate: bool = False  # the shared experts' output times sigmoid(x W), W [D, 1] (Qwen2-MoE)
    every: int = 1  # every k-th layer (after first_dense) is an MoE layer
    first_dense: int = 0  # the first k layers keep a dense feed-forward
    # which layer of each period of `every` (after first_dense) holds the experts: 0 its first;
    # every - 1 its last (Llama 4 Maverick's and Qwen-MoE's layers step - 1, 2 step - 1, ...)
    offset: int = 0
    load_balance_coef: float = 0.01  # Switch/GShard auxiliary loss weight
    z_loss_coef: float = 0.001  # router z-loss weight
    bias_update_rate: float = 0.001  # sigmoid router: loss-free balancing step per training step
    router_bias: bool = False  # a learned bias on the router logits (gpt-oss)
    expert_bias: bool = False  # biases after each expert's gate, up and down projections (gpt-oss)
    # gpt-oss's clamped SwiGLU (a gated silu): (clip(up, +-limit) + 1) * g * sigmoid(alpha * g), g = min(gate, limit)
    swiglu_limit: float | None = None  # None: the plain gated unit
    swiglu_alpha: float = 1.702  # its sigmoid gain (with swiglu_limit)
    weights_on_inputs: bool = False  # the router weight scales the expert's input, not its output (Llama 4; top-1)

    def _validate(self):
        require_positive(self, "num_experts", "top_k", "expert_ffn_dim", "num_groups", "top_groups", "every", "capacity_factor")
        require_positive(self, "swiglu_limit", "swiglu_alpha")
        require_non_negative(self, "shared_ffn_dim", "first_dense", "offset", "load_balance_coef", "z_loss_coef", "bias_update_rate")
        if self.offset >= self.every:
            raise ConfigError("offset", f"is a layer of each period of every={self.every}: it must be below {self.every}, got {self.offset}")
        if self.top_k > self.num_experts:
            raise ConfigError("top_k", f"{self.top_k} exceeds num_experts={self.num_experts}")
        if self.router == "switch" and self.top_k != 1:
            raise ConfigError("top_k", f"the switch router sends each token to one expert; got top_k={self.top_k}")
        if self.weights_on_inputs and (self.top_k != 1 or self.router == "expert_choice"):
            raise ConfigError(
                "weights_on_inputs", f"scales each token's one expert input: it needs top_k=1 token choice, not {self.router} top_k={self.top_k}"
            )
        if self.num_experts % self.num_groups:
            raise ConfigError("num_groups", f"{self.num_experts} experts do not split into {self.num_groups} equal groups")
        if self.top_groups > self.num_groups:
            raise ConfigError("top_groups", f"{self.top_groups} exceeds num_groups={self.num_groups}")
        if self.top_k > self.top_groups * (self.num_experts // self.num_groups):
            raise ConfigError("top_k", f"{self.top_k} exceeds the {self.top_groups} groups' experts a token may use")
        if self.shared_gate and not self.shared_ffn_dim:
            raise ConfigError("shared_gate", "gates the shared experts; set shared_ffn_dim to their width")
