"""Quantized runs for inference: `python -m zoo.quantize RUN OUT --to int8|w8a8|fp8|nf4` writes a run
directory whose linear weights are held quantized (zoo.layers.quantized; model.quantization in
its config), which sample.py reads like any run; `sample.py --quantize SCHEME` quantizes a run
as it loads it instead. A LoRA run is quantized with its adapters folded in."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from zoo import config as zoo_config
from zoo import runs
from zoo.console import ArgumentParser
from zoo.layers.quantized import SCHEMES
from zoo.models import build
from zoo.models.model import quantized
from zoo.new_run import check_new_run_directory, write_run
from zoo.rundir import RunError


def quantized_run(run: runs.Run, scheme: str) -> runs.Run:
    """A loaded run with its linear weights quantized in `scheme` (a LoRA run's adapters merged first)."""
    from zoo.lora import merged

    if run.config.model.quantization != "none":
        raise RunError(f"the run is already quantized ({run.config.model.quantization}); quantize the float run it came from")
    config, params = merged(run)
    model, params = quantized(build(config.model), params, scheme)
    return dataclasses.replace(run, config=dataclasses.replace(config, model=model.config), model=model, params=params)


def quantize_run(run_dir: str | Path, out_dir: str | Path, scheme: str) -> zoo_config.Config:
    """Writes the run of `run_dir` with its linear weights quantized in `scheme`; returns its config."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    check_new_run_directory(out_dir)
    run = quantized_run(runs.load(run_dir), scheme)
    sources = (run_dir,) if run.config.train.init_from is None else (run_dir, Path(run.config.train.init_from))
    write_run(out_dir, run.config, run.params, run.step, sources)
    return run.config


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m zoo.quantize", description="A run with its linear weights quantized, for inference.")
    parser.add_argument("source", help="a run directory (trained, imported, or LoRA)")
    parser.add_argument("target", help="the new run directory")
    parser.add_argument("--to", required=True, choices=tuple(SCHEMES), help="int8, fp8: per output channel; w8a8: int8 weights and inputs; nf4: 4-bit")
    args = parser.parse_args(argv)
    try:
        config = quantize_run(args.source, args.target, args.to)
    except (RunError, zoo_config.ConfigError, ValueError) as error:
        parser.error(str(error))
    print(f"quantized {args.source} -> {args.target} ({config.model.quantization})")


if __name__ == "__main__":
    main()
