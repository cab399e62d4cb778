"""Train a model: `python train.py [--config NAME] [--set key=value ...] [--workdir DIR] [--fresh]`.

With no arguments, trains configs/tiny.toml on the embedded corpus (the standard
library's sources) into ./runs/tiny, resuming from its latest checkpoint if present.
`--print-config` prints the resolved config and `--dry-run` the run's sizes, batch shapes
and mesh, both without compiling or writing anything.
Run the same command on every host of a multi-host job; `--coordinator`,
`--num-processes` and `--process-id` join them where jax cannot detect the cluster.
"""

import argparse
import sys
import textwrap
from pathlib import Path

from zoo import compile_cache, config, supervise
from zoo.config.lora import NEEDS_BASE
from zoo.console import ArgumentParser, show_kernel_choices
from zoo.distributed import initialize_distributed, process_count


def config_list() -> str:
    """--help's list of the configs in configs/ and where their settings are described."""
    names = ", ".join(sorted(path.stem for path in config.CONFIG_DIR.glob("*.toml")))
    return "\n".join([
        *textwrap.wrap(f"configs (in {config.CONFIG_DIR}): {names}", width=100, break_on_hyphens=False),
        "Every setting is described in README.md, section \"Configs\" (and the data, optimiser and mesh ones",
        "under \"Training\").",
    ])


def heartbeat_seconds(text: str) -> int:
    """--heartbeat's value: whole seconds from 2 to 3600."""
    try:
        seconds = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected whole seconds, got {text!r}") from None
    if not 2 <= seconds <= 3600:
        raise argparse.ArgumentTypeError(f"must be from 2 to 3600 seconds, got {seconds}")
    return seconds


def main(argv=None) -> int:
    parser = ArgumentParser(
        prog="train.py", description=__doc__, epilog=config_list(), formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", default=config.DEFAULT_CONFIG, help="config name in configs/ or a TOML path")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--workdir", help="run directory (default: runs/CONFIG_NAME)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over, tokenizer included: an earlier run's files are moved into WORKDIR/previous/TIME/")
    parser.add_argument("--parallel", choices=("jit", "pmap"), default="jit",
                        help="jit: shard over the config's mesh (default); pmap: plain data parallelism")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved config (base inherited, --set applied) as TOML and exit")
    parser.add_argument("--dry-run", action="store_true",
                        help="check the run and print its parameter counts, batch shapes and mesh, then exit: "
                        "compiles nothing, reads no data, writes nothing")
    parser.add_argument("--wandb", nargs="?", const="", metavar="PROJECT",
                        help="log the metrics to Weights & Biases too (pip install -e \".[wandb]\"), to PROJECT "
                        "or wandb's default; its own settings (WANDB_MODE, WANDB_API_KEY, ...) hold")
    parser.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, for multi-host runs")
    parser.add_argument("--num-processes", type=int, help="number of processes in a multi-host run")
    parser.add_argument("--process-id", type=int, help="this process's index in a multi-host run")
    parser.add_argument("--heartbeat", type=heartbeat_seconds, default=supervise.HEARTBEAT_SECONDS, metavar="SECONDS",
                        help="in a multi-host run, how long a silent process is waited for before the others stop "
                        f"(default {supervise.HEARTBEAT_SECONDS})")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    own_run = Path("runs") / Path(args.config).stem  # where `python train.py --config CONFIG` trains
    try:
        cfg = load_config(args.config, args.set, own_run)
        processes = process_count(args.coordinator, args.num_processes, args.process_id)
    except (config.ConfigError, ValueError) as error:
        parser.error(str(error))
    if args.print_config:
        sys.stdout.write(config.to_toml(cfg))
        return 0
    workdir = Path(args.workdir or (own_run.with_name(own_run.name + "-lora") if cfg.train.lora else own_run))
    if processes > 1 and not supervise.supervised():  # so that losing another process ends this one in one line
        return supervise.run_child([__file__, *argv], process_id=args.process_id, num_processes=processes, workdir=workdir)
    initialize_distributed(args.coordinator, args.num_processes, args.process_id, heartbeat_seconds=args.heartbeat)
    compile_cache.enable()  # a resumed run loads its compiled step instead of compiling it again

    from zoo.train import Interrupted, TrainingError, train  # after the distributed start-up, which must come first
    from zoo.train.loop import dry_run
    from zoo.train.wandb_run import check_available

    if args.wandb is not None and (missing := check_available()):
        parser.error(missing)

    if args.dry_run:
        try:
            dry_run(cfg, workdir, fresh=args.fresh, parallel=args.parallel)
        except TrainingError as error:
            parser.fail(str(error), error.exit_code)
        return 0
    try:
        with show_kernel_choices(sys.stderr):
            train(cfg, workdir, fresh=args.fresh, parallel=args.parallel, wandb=args.wandb)
    except TrainingError as error:
        parser.fail(str(error), error.exit_code)
    except Interrupted as stop:
        print(stop.describe(), file=sys.stderr, flush=True)
        return stop.exit_code
    return 0


def load_config(name: str, overrides: list[str], own_run: Path) -> config.Config:
    """The config with its overrides. A LoRA run (train.lora) names its base run in train.init_from,
    by default the config's own run directory; the path is made absolute, so that the run's
    adapters find their base from wherever they are read."""
    try:
        cfg = config.load(name, overrides)
    except config.ConfigError as error:
        if (error.key, error.message) != ("train.lora", NEEDS_BASE):
            raise
        cfg = config.load(name, [*overrides, f"train.init_from={own_run}"])
    if cfg.train.lora is not None:
        cfg = config.override(cfg, {"train.init_from": str(Path(cfg.train.init_from).resolve())})
    return cfg


if __name__ == "__main__":
    sys.exit(main())
