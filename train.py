"""Train a model: `python train.py [--config NAME] [--set key=value ...] [--workdir DIR] [--fresh]`.

With no arguments, trains configs/tiny.toml on the embedded corpus (the standard
library's sources) into ./runs/tiny, resuming from its latest checkpoint if present.
Run the same command on every host of a multi-host job; `--coordinator`,
`--num-processes` and `--process-id` join them where jax cannot detect the cluster.
"""

import argparse
import sys
from pathlib import Path

from zoo import config, supervise
from zoo.console import ArgumentParser, show_kernel_choices
from zoo.distributed import initialize_distributed, process_count


def main(argv=None) -> int:
    parser = ArgumentParser(prog="train.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=config.DEFAULT_CONFIG, help="config name in configs/ or a TOML path")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--workdir", help="run directory (default: runs/CONFIG_NAME)")
    parser.add_argument("--fresh", action="store_true",
                        help="start over, tokenizer included: an earlier run's files are moved into WORKDIR/previous/TIME/")
    parser.add_argument("--parallel", choices=("jit", "pmap"), default="jit",
                        help="jit: shard over the config's mesh (default); pmap: plain data parallelism")
    parser.add_argument("--coordinator", metavar="HOST:PORT", help="address of process 0, for multi-host runs")
    parser.add_argument("--num-processes", type=int, help="number of processes in a multi-host run")
    parser.add_argument("--process-id", type=int, help="this process's index in a multi-host run")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.config, args.set)
        processes = process_count(args.coordinator, args.num_processes, args.process_id)
    except (config.ConfigError, ValueError) as error:
        parser.error(str(error))
    workdir = Path(args.workdir or Path("runs") / Path(args.config).stem)
    if processes > 1 and not supervise.supervised():  # so that losing another process ends this one in one line
        return supervise.run_child([__file__, *argv], process_id=args.process_id, num_processes=processes, workdir=workdir)
    initialize_distributed(args.coordinator, args.num_processes, args.process_id, heartbeat_seconds=supervise.HEARTBEAT_SECONDS)

    from zoo.train import Interrupted, TrainingError, train  # after the distributed start-up, which must come first

    try:
        with show_kernel_choices(sys.stderr):
            train(cfg, workdir, fresh=args.fresh, parallel=args.parallel)
    except TrainingError as error:
        parser.fail(str(error), error.exit_code)
    except Interrupted as stop:
        print(stop.describe(), file=sys.stderr, flush=True)
        return stop.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
