"""python -m zoo.hf import HF_DIR OUT_DIR | export RUN_DIR HF_DIR"""

from __future__ import annotations

from zoo.config import ConfigError
from zoo.console import ArgumentParser
from zoo.hf import HFConfigError, export_run, import_run
from zoo.runs import RunError


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m zoo.hf", description="Hugging Face checkpoints <-> zoo run directories.")
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import", help="a Hugging Face model directory -> a zoo run directory")
    importing.add_argument("source", help="directory with config.json and *.safetensors")
    importing.add_argument("target", help="the new run directory")
    exporting = commands.add_parser("export", help="a zoo run directory -> a Hugging Face model directory")
    exporting.add_argument("source", help="a run directory written by train.py or by import")
    exporting.add_argument("target", help="the directory to write config.json and model.safetensors to")
    args = parser.parse_args(argv)
    try:
        if args.command == "import":
            cfg, left_out = import_run(args.source, args.target)
            print(f"imported {args.source} -> {args.target} ({cfg.model.num_layers} layers, d_model {cfg.model.d_model})")
            if left_out:
                print(f"left out (no use in zoo): {', '.join(left_out)}")
        else:
            hf = export_run(args.source, args.target)
            print(f"exported {args.source} -> {args.target} ({hf['architectures'][0]})")
    except (HFConfigError, RunError, ConfigError) as error:  # one line, no usage: the arguments were fine
        parser.error(str(error))


if __name__ == "__main__":
    main()
