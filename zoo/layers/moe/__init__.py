"""Mixture of experts: routers, experts, dispatch and the MoE feed-forward layer."""

from zoo.layers.moe.experts import Experts
from zoo.layers.moe.layer import MoE, MoEStats, balance_sums, load_balancing_loss, router_z_loss
from zoo.layers.moe.router import ROUTERS, Router, RouterBias, Routing, balance, expert_capacity

__all__ = [
    "Experts", "MoE", "MoEStats", "ROUTERS", "Router", "RouterBias", "Routing", "balance", "balance_sums", "expert_capacity",
    "load_balancing_loss", "router_z_loss",
]
