"""Training memory from the compiler, on any machine (issue 18): the train step (forward, backward,
AdamW; bf16 compute, float32 params) of the TinyLlama-1.1B shape and of the Mixtral-shaped MoE
at 8 x 2048 tokens, compiled for abstract inputs (nothing is allocated) under each remat
policy, with XLA's memory_analysis(): arguments (params, AdamW moments, the batch), outputs
(the new state, aliased to the donated arguments), and temporaries (what the step keeps for
the backward pass and its scratch). Beside them, zoo.plan's figures for the same step, planned
from shapes (arguments: parameters, optimizer state and batch; temporaries: gradients,
activations and the working set), to see how far the planner is at full size.

The figures are the compiling backend's: on a CPU they show how each policy trades
recomputation for memory, and where a run would not fit; the GPU's own compile may fuse and
schedule differently. The attention kernel is `chunked` by default (the memory of a fused
kernel: linear in the sequence length), `--kernel xla` to see the [T, S] logits kept.

    python bench/memory.py [--small] [--kernel chunked|xla]
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp

from zoo import models, plan, stats
from zoo.config import Config, ModelConfig, TrainConfig
from zoo.models.stack import REMAT_POLICIES
from zoo.train.optimizer import optimizer
from zoo.train.step import init_state, train_step

import shapes
from common import heading, seconds, show, size
from training import FULL_BATCH, SMALL_BATCH

SHAPES = {"TinyLlama-1.1B shape": shapes.tinyllama, "Mixtral-shaped MoE": shapes.mixtral}


def compiled_memory(config: ModelConfig, batch: int, length: int):
    """(XLA's memory analysis, compile seconds) of the train step for `batch` rows of `length` tokens."""
    model = models.build(config)
    run = TrainConfig(batch_size=batch, seq_len=length, steps=10_000)
    tx = optimizer(run)
    state = jax.eval_shape(lambda key: init_state(model, tx, key), jax.random.key(0))
    rows = {name: jax.ShapeDtypeStruct((batch, length + 1), jnp.int32) for name in ("tokens", "segment_ids")}
    start = time.perf_counter()
    compiled = jax.jit(train_step(model, tx, run), donate_argnums=0).lower(state, rows).compile()
    return compiled.memory_analysis(), time.perf_counter() - start, model


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--small", action="store_true", help="small shapes that compile in seconds: a smoke test")
    cli.add_argument("--kernel", default="chunked", choices=("chunked", "xla"), help="attention kernel (default chunked)")
    args = cli.parse_args()
    batch, length = SMALL_BATCH if args.small else FULL_BATCH
    print(f"compiling for {jax.default_backend()} ({jax.devices()[0].device_kind}); nothing is allocated")
    for name, shape in SHAPES.items():
        rows = {}
        for remat in REMAT_POLICIES:
            settings = {"dtype": "bfloat16", "param_dtype": "float32", "remat": remat, "attention": {"kernel": args.kernel}}
            model_config = ModelConfig.from_dict(shape(args.small) | settings)
            memory, compile_seconds, model = compiled_memory(model_config, batch, length)
            run = Config(model=model_config, train=TrainConfig(batch_size=batch, seq_len=length, steps=10_000))
            planned = plan.plan(run, plan.MeshShape.parse("data=1"))
            planned_arguments = planned.parameters + planned.optimizer_state + planned.batch_bytes
            planned_temporaries = planned.gradients + planned.activations + planned.temporaries
            if memory is None:
                rows[remat] = f"not reported by this backend; planned: arguments {size(planned_arguments)}, temporaries {size(planned_temporaries)}"
                continue
            rows[remat] = (
                f"arguments {size(memory.argument_size_in_bytes)}, outputs {size(memory.output_size_in_bytes)} "
                f"(aliased {size(memory.alias_size_in_bytes)}), temporaries {size(memory.temp_size_in_bytes)}; "
                f"compiled in {seconds(compile_seconds)} | planned: arguments {size(planned_arguments)}, "
                f"temporaries {size(planned_temporaries)} ({planned_temporaries / memory.temp_size_in_bytes - 1:+.0%})"
            )
        described = f"{stats.total_params(model):,} params, {batch} x {length} tokens, attention {args.kernel}"
        show(heading(f"train step memory, {name}: {described}, by remat policy", args.small), rows)


if __name__ == "__main__":
    main()
