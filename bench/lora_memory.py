"""Fine-tuning memory from the compiler, on any machine (issue 20): full fine-tuning against LoRA
rank 16 against QLoRA (rank 16 on an NF4 base), for the default tiny model (16 x 128 tokens)
and the TinyLlama-1.1B shape (8 x 2048), the train step compiled for abstract inputs (nothing
is allocated; bf16 compute, float32 params and adapters, remat `full`).

Printed per mode: the parameters a step trains, the bytes of the training state (what the
step updates: params or adapters, AdamW's two moments) and of the frozen base, and XLA's
memory_analysis(): arguments (state, frozen base, batch) and temporaries.

    python bench/lora_memory.py [--small]
"""

from __future__ import annotations

import argparse
import math

import jax
import jax.numpy as jnp
from flax import nnx

from zoo import config, models, stats
from zoo.config import LoraConfig, ModelConfig, TrainConfig
from zoo.layers.quantized import hold
from zoo.train.optimizer import optimizer
from zoo.train.step import init_state, train_step, trainable

import shapes
from common import heading, show, size

MODES = {"full fine-tuning": None, "LoRA r16": ("as_saved", 16), "QLoRA r16, NF4 base": ("nf4", 16)}
TARGETS = ("attention.*", "ffn.*")  # every linear layer of the blocks, as QLoRA adapts


def tree_bytes(tree) -> int:
    """Bytes of the arrays of a tree of shapes (4-bit values at half a byte; a PRNG key's data at 8)."""
    def nbytes(x):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return 8
        return math.prod(x.shape) * jnp.dtype(x.dtype).itemsize / (2 if jnp.dtype(x.dtype).name in ("uint4", "int4") else 1)

    return round(sum(nbytes(x) for x in jax.tree.leaves(tree)))


def abstract_frozen(model: models.Model, held: str):
    """The frozen base's shapes and dtypes as a LoRA run holds it (quantized ones included)."""

    def make():
        base = models.build(model.config).bind(trainable(model, model.init(jax.random.key(0)))[1])
        hold(base, held)
        return nnx.state(base)

    return jax.eval_shape(make)


def measure(model_config: ModelConfig, mode, batch: int, length: int) -> str:
    lora = None if mode is None else LoraConfig(rank=mode[1], targets=TARGETS, base_weights=mode[0])
    model = models.build(model_config, lora)
    run = TrainConfig(batch_size=batch, seq_len=length, steps=10_000)
    tx = optimizer(run)
    state = jax.eval_shape(lambda key: init_state(model, tx, key), jax.random.key(0))
    frozen = None if mode is None else abstract_frozen(model, mode[0])
    rows = {name: jax.ShapeDtypeStruct((batch, length + 1), jnp.int32) for name in ("tokens", "segment_ids")}
    memory = jax.jit(train_step(model, tx, run), donate_argnums=0).lower(state, rows, frozen).compile().memory_analysis()
    compiled = "not reported by this backend" if memory is None else (
        f"arguments {size(memory.argument_size_in_bytes)}, temporaries {size(memory.temp_size_in_bytes)}"
    )
    return (
        f"{stats.trainable_params(model):>13,} trained | state {size(tree_bytes(state))} | "
        f"frozen base {size(tree_bytes(frozen)) if frozen is not None else '-'} | {compiled}"
    )


def main() -> None:
    cli = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cli.add_argument("--small", action="store_true", help="the tiny model only: a smoke test that compiles in seconds")
    args = cli.parse_args()
    print(f"compiling for {jax.default_backend()} ({jax.devices()[0].device_kind}); nothing is allocated")
    tiny = config.to_dict(config.load("tiny").model)
    cases = {"default tiny model, 16 x 128": (tiny, 16, 128)}
    if not args.small:
        cases["TinyLlama-1.1B shape, 8 x 2048"] = (shapes.TINYLLAMA, 8, 2048)
    settings = {"dtype": "bfloat16", "param_dtype": "float32", "remat": "full", "attention": {"kernel": "chunked"}}
    for name, (shape, batch, length) in cases.items():
        model_config = ModelConfig.from_dict(shape | settings)
        rows = {mode: measure(model_config, MODES[mode], batch, length) for mode in MODES}
        show(heading(f"fine-tuning memory, {name} ({stats.total_params(models.build(model_config)):,} params)", False), rows)


if __name__ == "__main__":
    main()
