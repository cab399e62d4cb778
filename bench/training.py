"""A training-step benchmark (forward, backward, AdamW) of a zoo model: tokens/s, MFU, compile time.

`main` is the whole of `bench/train.py` and `bench/moe.py`, which differ in the model
shape. MFU counts `zoo.stats.flops_per_token` (6 N + 6 H (Dqk + Dv) x the keys each query sees,
causal masking halving the attention term as MaxText counts; N the matmul parameters a token
passes through: for an MoE only its routed experts), so it is MFU on active parameters. The
MFU by PaLM's unmasked count (12 L H Dh T), which published figures often use, is printed beside it.
"""

from __future__ import annotations

import time
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from zoo import models, stats
from zoo.config import ModelConfig, TrainConfig
from zoo.layers.attention import KERNELS
from zoo.train.optimizer import optimizer
from zoo.train.step import init_state, train_step

from common import flops, heading, log_attention_choices, parser, seconds, share, show, size, timed
from limits import Limits, measure, show_limits

FULL_BATCH, SMALL_BATCH = (8, 2048), (2, 128)  # (rows, tokens per row)


def random_rows(vocab_size: int, batch: int, length: int) -> dict[str, np.ndarray]:
    """A batch as the data pipeline gives it: tokens and segment ids (one document), int32 [B, L + 1]."""
    tokens = np.random.default_rng(0).integers(0, vocab_size, (batch, length + 1), dtype=np.int32)
    return {"tokens": tokens, "segment_ids": np.ones_like(tokens)}


def zoo_training(model: models.Model, rows: dict[str, np.ndarray], args) -> dict:
    """Compiles zoo's train step ahead of time, then times it: compile seconds, XLA's memory
    figures, first and median step seconds, first and last loss."""
    batch, length = rows["tokens"].shape
    run = TrainConfig(batch_size=batch, seq_len=length - 1, steps=10_000)
    tx = optimizer(run)
    state = jax.jit(lambda key: init_state(model, tx, key))(jax.random.key(0))
    rows = jax.tree.map(jnp.asarray, rows)
    start = time.perf_counter()
    step = jax.jit(train_step(model, tx, run), donate_argnums=0).lower(state, rows).compile()
    compile_seconds = time.perf_counter() - start
    memory = step.memory_analysis()
    losses = []

    def one_step():
        nonlocal state
        state, metrics = step(state, rows)
        losses.append(metrics["loss"])
        return state

    timing = timed(one_step, steps=args.steps, warmup=args.warmup)
    if memory is not None:
        memory = f"{size(memory.argument_size_in_bytes)} state and batch, {size(memory.temp_size_in_bytes)} temporaries"
    return {
        "compile": compile_seconds,
        "memory": f"{memory} (XLA's buffer assignment)" if memory else "not reported by this backend",
        "first": timing.first,
        "step": timing.median,
        "losses": (float(losses[0]), float(losses[-1])),
    }


def rates(step_seconds: float, tokens: int, flops_per_token: int, limits: Limits) -> dict[str, str]:
    """tokens/s, achieved FLOP/s, MFU against the datasheet peak and share of the measured matmul."""
    achieved = tokens * flops_per_token / step_seconds
    return {
        "tokens/s": f"{tokens / step_seconds:,.0f}",
        "achieved": flops(achieved),
        "MFU": share(achieved, limits.peak_flops, "datasheet dense bf16 peak"),
        "of measured matmul": share(achieved, limits.matmul_flops, "measured bf16 matmul"),
    }


def reference_rows(config: ModelConfig, rows: dict, args, flops_per_token: int, limits: Limits, zoo_step: float) -> dict:
    """The same step in transformers: its figures and zoo's ratio to them, or why it could not run."""
    try:
        import hf_reference
    except ImportError as error:
        return {"transformers": f"skipped: {error}"}
    net = hf_reference.model(config, hf_reference.torch.float32)
    step = hf_reference.train_step(net, rows["tokens"], compile=args.compile)
    timing = timed(step, steps=args.reference_steps, warmup=args.warmup, wait=hf_reference.wait)
    batch, length = rows["tokens"].shape
    mode = "torch.compile" if args.compile else "eager"
    return {
        "what": f"{hf_reference.describe()}, {type(net).__name__}, {mode}, attention {net.config._attn_implementation}",
        "first step": seconds(timing.first),
        "step time": f"{seconds(timing.median)} (median of {args.reference_steps})",
        **rates(timing.median, batch * (length - 1), flops_per_token, limits),
        "loss": f"{float(timing.result):.3f} last",
        "zoo / transformers": f"{timing.median / zoo_step:.2f}x the tokens/s",
    }


def main(doc: str, shape: Callable[[bool], dict], name: str, mfu_target: str, compile_target: str = "") -> None:
    """Parses the flags, builds `shape(small)` (a [model] table) in bf16 compute with float32 params,
    and prints the hardware limits, zoo's figures and, with --reference, transformers' and the ratio."""
    cli = parser(doc)
    cli.add_argument("--kernel", default="auto", choices=KERNELS.names(), help="attention kernel (default auto)")
    remat = ("none", "full", "dots", "dots_no_batch")
    cli.add_argument("--remat", default="none", choices=remat, help="rematerialisation policy (default none)")
    cli.add_argument("--compile", action="store_true", help="torch.compile the transformers reference")
    args = cli.parse_args()
    log_attention_choices()
    batch, length = SMALL_BATCH if args.small else FULL_BATCH
    settings = {"dtype": "bfloat16", "param_dtype": "float32", "remat": args.remat, "attention": {"kernel": args.kernel}}
    config = ModelConfig.from_dict(shape(args.small) | settings)
    model = models.build(config)
    limits = measure(args.small)
    show_limits(limits)
    rows = random_rows(config.vocab_size, batch, length)
    tokens, flops_per_token = batch * length, stats.flops_per_token(model, length)
    unmasked = stats.flops_per_token(model, length, masked=False)
    figures = zoo_training(model, rows, args)
    zoo_rates = rates(figures["step"], tokens, flops_per_token, limits)
    palm_rates = rates(figures["step"], tokens, unmasked, limits)
    show(
        heading(f"zoo training step: {name}", args.small),
        {
            "model": f"{stats.total_params(model):,} params, {stats.active_params(model):,} active per token, "
            f"{config.num_layers} layers, d_model {config.d_model}",
            "step": f"{batch} x {length} tokens, bf16 compute, float32 params, AdamW, remat {config.remat}, "
            f"attention {config.attention.kernel}, scanned layers {config.scan_layers}",
            "FLOPs/token": f"{flops_per_token:,} (6 N + 6 H (Dqk + Dv) x keys seen, N = {stats.matmul_params(model):,} "
            f"matmul params a token uses; causal halved); {unmasked:,} by PaLM's unmasked 6 N + 12 L H Dh T",
            "compile": f"{seconds(figures['compile'])} (trace, lower, compile{compile_target})",
            "memory": figures["memory"],
            "first step": seconds(figures["first"]),
            "step time": f"{seconds(figures['step'])} (median of {args.steps})",
            **zoo_rates,
            "MFU": f"{zoo_rates['MFU']} (target {mfu_target})",
            "MFU, PaLM's count": palm_rates["MFU"],
            "loss": "{:.3f} first, {:.3f} last".format(*figures["losses"]),
        },
    )
    if args.reference:
        reference = reference_rows(config, rows, args, flops_per_token, limits, figures["step"])
        show("transformers reference: the same step", reference)
