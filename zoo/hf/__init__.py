"""Hugging Face interop: import a model directory as a zoo run directory, and export back.

    python -m zoo.hf import HF_DIR OUT_DIR   # config.json + *.safetensors -> a run directory
    python -m zoo.hf export RUN_DIR HF_DIR   # a run directory -> config.json + model.safetensors

Weights are read only from safetensors (sharded ones through their index); pickled
`.bin`/`.pt` weights are refused, never unpickled. A sentencepiece `tokenizer.model` is
carried over in both directions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
from safetensors import safe_open
from safetensors.numpy import save_file

from zoo import config as zoo_config
from zoo import runs
from zoo.hf import mapping
from zoo.hf.families import FAMILIES, config_to_hf, config_to_zoo, family_named
from zoo.hf.mapping import HFConfigError
from zoo.models import build

__all__ = ["FAMILIES", "HFConfigError", "config_to_hf", "config_to_zoo", "export_run", "import_run", "read_tensors"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def read_tensors(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of the safetensors files in `directory` (through model.safetensors.index.json
    when there is one), as numpy arrays."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        files = sorted({directory / name for name in json.loads(index.read_text())["weight_map"].values()})
    else:
        files = sorted(directory.glob("*.safetensors"))
    if not files:
        pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickled:
            raise HFConfigError(
                f"{directory} holds only pickled weights ({', '.join(pickled)}); zoo never unpickles files. "
                "Convert them to safetensors first (transformers: model.save_pretrained(dir, safe_serialization=True))"
            )
        raise HFConfigError(f"{directory} holds no *.safetensors weights")
    tensors = {}
    for file in files:
        with safe_open(file, framework="flax") as handle:  # flax: bfloat16 reads without torch
            for name in handle.keys():
                tensors[name] = np.asarray(handle.get_tensor(name))
    return tensors


def import_run(hf_dir: str | Path, out_dir: str | Path) -> tuple[zoo_config.Config, list[str]]:
    """Writes a run directory (config.toml, params checkpoint 0, tokenizer.model when the model
    has a sentencepiece one) that sample.py and train.py read. Returns its config and the
    checkpoint tensors left out (heads zoo does not build, such as BERT's pooler)."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if not (hf_dir / "config.json").is_file():
        raise HFConfigError(f"{hf_dir} is not a Hugging Face model directory: it has no config.json")
    if (out_dir / runs.CHECKPOINTS).exists():
        raise HFConfigError(f"{out_dir} already holds checkpoints; import into a new directory")
    hf_config = json.loads((hf_dir / "config.json").read_text())
    model_config = config_to_zoo(hf_config)
    model = build(model_config)
    layout = family_named(hf_config["model_type"]).layout(model_config, hf_config)
    params, left_out = mapping.to_zoo(model, layout, read_tensors(hf_dir))
    tokenizer = hf_dir / "tokenizer.model"
    data = {"tokenizer": str((out_dir / runs.TOKENIZER).resolve())} if tokenizer.is_file() else {}
    train = {"seq_len": min(zoo_config.TrainConfig.seq_len, model_config.max_seq_len)}
    cfg = zoo_config.from_dict({"model": zoo_config.to_dict(model_config), "data": data, "train": train})
    out_dir.mkdir(parents=True, exist_ok=True)
    if tokenizer.is_file():
        shutil.copyfile(tokenizer, out_dir / runs.TOKENIZER)
    manager = ocp.CheckpointManager((out_dir / runs.CHECKPOINTS).resolve(), options=ocp.CheckpointManagerOptions(create=True))
    params = jax.tree.map(jax.numpy.asarray, params)
    manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave({"params": params})))
    manager.wait_until_finished()
    manager.close()
    (out_dir / runs.CONFIG).write_text(zoo_config.to_toml(cfg))  # last: a run directory only once complete
    return cfg, left_out


def export_run(run_dir: str | Path, hf_dir: str | Path) -> dict:
    """Writes config.json and model.safetensors (and tokenizer.model) that transformers loads.
    Returns the Hugging Face config."""
    run = runs.load(run_dir)
    family, hf_config = config_to_hf(run.config.model)
    tensors = mapping.to_hf(run.model, family.layout(run.config.model, None), run.params)
    hf_dir = Path(hf_dir)
    hf_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, hf_dir / "model.safetensors", metadata={"format": "pt"})
    (hf_dir / "config.json").write_text(json.dumps(hf_config, indent=2))
    if run.tokenizer is not None:
        shutil.copyfile(Path(run_dir) / runs.TOKENIZER, hf_dir / "tokenizer.model")
    return hf_config
