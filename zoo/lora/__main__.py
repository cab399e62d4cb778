"""python -m zoo.lora merge RUN OUT | export RUN PEFT_DIR | import PEFT_DIR BASE_RUN OUT"""

from __future__ import annotations

from zoo.config import ConfigError
from zoo.console import ArgumentParser
from zoo.hf import HFConfigError
from zoo.lora import merge_run
from zoo.lora.peft import PeftError, export_peft, import_peft
from zoo.runs import RunError


def main(argv: list[str] | None = None) -> None:
    parser = ArgumentParser(prog="python -m zoo.lora", description="LoRA runs: fold adapters in, or move them to and from Hugging Face PEFT.")
    commands = parser.add_subparsers(dest="command", required=True)
    merging = commands.add_parser("merge", help="a LoRA run -> a full run with its adapters folded into the weights")
    merging.add_argument("source", help="a run directory trained with [train.lora]")
    merging.add_argument("target", help="the new run directory")
    exporting = commands.add_parser("export", help="a LoRA run's adapters -> a PEFT adapter directory")
    exporting.add_argument("source", help="a run directory trained with [train.lora]")
    exporting.add_argument("target", help="the directory to write adapter_config.json and adapter_model.safetensors to")
    importing = commands.add_parser("import", help="a PEFT LoRA adapter directory -> a zoo LoRA run")
    importing.add_argument("source", help="a directory with adapter_config.json and adapter_model.safetensors")
    importing.add_argument("base", help="the zoo run of the model it adapts (e.g. from python -m zoo.hf import)")
    importing.add_argument("target", help="the new run directory")
    args = parser.parse_args(argv)
    try:
        if args.command == "merge":
            merge_run(args.source, args.target)
            print(f"merged {args.source} into {args.target}: a full run, its adapters folded into the weights")
        elif args.command == "export":
            settings = export_peft(args.source, args.target)
            print(f"exported the adapters of {args.source} -> {args.target} (r={settings['r']}, {len(settings['target_modules'])} modules)")
        else:
            cfg = import_peft(args.source, args.base, args.target)
            print(f"imported {args.source} -> {args.target}: rank {cfg.train.lora.rank} adapters on {args.base}")
    except (PeftError, HFConfigError, RunError, ConfigError) as error:  # one line, no usage: the arguments were fine
        parser.error(str(error))


if __name__ == "__main__":
    main()
