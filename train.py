"""Train a model: `python train.py [--config NAME] [--set key=value ...] [--workdir DIR] [--fresh]`.

With no arguments, trains configs/tiny.toml on the embedded corpus (the standard
library's sources) into ./runs/tiny, resuming from its latest checkpoint if present.
"""

import argparse
import sys
from pathlib import Path

from zoo import config
from zoo.train import TrainingError, train


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=config.DEFAULT_CONFIG, help="config name in configs/ or a TOML path")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    parser.add_argument("--workdir", help="run directory (default: runs/CONFIG_NAME)")
    parser.add_argument("--fresh", action="store_true", help="discard the work directory's checkpoints and start over")
    args = parser.parse_args(argv)
    try:
        cfg = config.load(args.config, args.set)
    except config.ConfigError as error:
        parser.error(str(error))
    workdir = Path(args.workdir or Path("runs") / Path(args.config).stem)
    try:
        train(cfg, workdir, fresh=args.fresh)
    except TrainingError as error:
        print(f"train.py: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
