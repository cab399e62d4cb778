"""AdamW with linear warmup, cosine decay, gradient clipping and a weight-decay mask."""

from __future__ import annotations

import jax
import optax
from flax import nnx

from zoo.config import TrainConfig

NO_DECAY = ("scale", "bias")  # norm gains and biases are not decayed


def learning_rate(config: TrainConfig) -> optax.Schedule:
    """Linear warmup 0 -> peak over warmup_steps, then cosine or linear decay to
    final_lr_fraction x peak at the last step."""
    peak, warmup = config.learning_rate, config.warmup_steps
    end, decay_steps = config.final_lr_fraction * peak, max(config.steps - warmup, 1)
    if config.decay == "cosine":
        decay = optax.cosine_decay_schedule(peak, decay_steps, alpha=config.final_lr_fraction)
    else:
        decay = optax.linear_schedule(peak, end, decay_steps)
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def decay_mask(params: nnx.State):
    """True for each parameter that weight decay applies to (matrices and embeddings)."""

    def decays(path, variable) -> bool:
        return getattr(path[-1], "key", None) not in NO_DECAY

    return jax.tree_util.tree_map_with_path(decays, params, is_leaf=lambda x: isinstance(x, nnx.Variable))


def trained(params: nnx.State):
    """"train" for each parameter, "frozen" for other state (MoE routers' balancing biases)."""
    return jax.tree.map(
        lambda v: "train" if isinstance(v, nnx.Param) else "frozen", params, is_leaf=lambda x: isinstance(x, nnx.Variable)
    )


def optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Global-norm clipping, then AdamW (b2 = 0.95) on the schedule, decaying only masked params;
    state that is not a parameter is left to whatever updates it."""
    adamw = optax.chain(
        optax.clip_by_global_norm(config.grad_clip),
        optax.adamw(learning_rate(config), b1=0.9, b2=0.95, weight_decay=config.weight_decay, mask=decay_mask),
    )
    return optax.multi_transform({"train": adamw, "frozen": optax.set_to_zero()}, trained)
