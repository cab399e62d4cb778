"""Hugging Face interop: import a model directory as a zoo run directory, and export back.

    python -m zoo.hf import HF_DIR OUT_DIR   # config.json + *.safetensors -> a run directory
    python -m zoo.hf export RUN_DIR HF_DIR   # a run directory -> config.json + model.safetensors

An import records the Hugging Face family it came from (source.json, see zoo/rundir.py)
and export writes that family; for a run trained here export takes the first family that
holds its model. Weights are read only from safetensors (sharded ones through their
index); pickled `.bin`/`.pt` weights are refused, never unpickled. The tokenizer files are
carried over in both directions: a sentencepiece `tokenizer.model`, and a `tokenizer.json`
with its `tokenizer_config.json` (special tokens, chat template); each is checked on import.
The bos/eos token ids (config.json's, or generation_config.json's where it sets them) travel
in the model config.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import jax
from safetensors.numpy import save_file

from zoo import config as zoo_config
from zoo import rundir, runs
from zoo.hf import mapping
from zoo.hf.families import FAMILIES, config_to_hf, config_to_zoo, read_config
from zoo.hf.files import read_hf_tokenizer, read_json, read_tensors, read_tokenizer
from zoo.hf.mapping import HFConfigError
from zoo.lora import merged
from zoo.models import build
from zoo.tokenizer import TextTokenizer
from zoo.train.checkpoint import Checkpoints

__all__ = ["FAMILIES", "HFConfigError", "config_to_hf", "config_to_zoo", "export_run", "import_run", "read_tensors"]


def import_run(hf_dir: str | Path, out_dir: str | Path) -> tuple[zoo_config.Config, list[str]]:
    """Writes a run directory (config.toml, params checkpoint 0, the model's tokenizer.model and
    tokenizer.json + tokenizer_config.json where it has them, source.json naming its family) that
    sample.py and train.py read; data.tokenizer names the file sampling reads (rundir.tokenizer_path).
    Returns its config and the checkpoint tensors left out (heads zoo does not build, such as
    BERT's pooler). Everything is read and checked before anything is written."""
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if not (hf_dir / "config.json").is_file():
        raise HFConfigError(f"{hf_dir} is not a Hugging Face model directory: it has no config.json")
    try:
        rundir.check_path(out_dir)
    except rundir.RunError as error:
        raise HFConfigError(str(error)) from None
    if out_dir.exists() and not out_dir.is_dir():
        raise HFConfigError(f"{out_dir} exists and is not a directory; import into a new directory")
    if rundir.checkpoints_dir(out_dir).exists():
        raise HFConfigError(f"{out_dir} already holds checkpoints; import into a new directory")
    generation = hf_dir / "generation_config.json"
    family, model_config, layout = read_config(read_json(hf_dir / "config.json"), read_json(generation) if generation.is_file() else None)
    tokenizers = []
    if (hf_dir / rundir.TOKENIZER).is_file():
        tokenizers.append(read_tokenizer(hf_dir / rundir.TOKENIZER, model_config.vocab_size))
    if (hf_dir / rundir.TOKENIZER_JSON).is_file():
        config_path = hf_dir / rundir.TOKENIZER_CONFIG
        tokenizers.append(read_hf_tokenizer(hf_dir / rundir.TOKENIZER_JSON, config_path if config_path.is_file() else None, model_config.vocab_size))
    model = build(model_config)
    params, left_out = mapping.to_zoo(model, layout, read_tensors(hf_dir))
    name = rundir.TOKENIZER_JSON if (hf_dir / rundir.TOKENIZER_JSON).is_file() else rundir.TOKENIZER
    data = {"tokenizer": str((out_dir / name).resolve())} if tokenizers else {}
    train = {"seq_len": min(zoo_config.TrainConfig.seq_len, model_config.max_seq_len)}
    cfg = zoo_config.from_dict({"model": zoo_config.to_dict(model_config), "data": data, "train": train})
    out_dir.mkdir(parents=True, exist_ok=True)
    for tokenizer in tokenizers:
        rundir.write_tokenizer(out_dir, tokenizer)
    if tokenizers and (hf_dir / rundir.CHAT_TEMPLATE).is_file():
        rundir.write_atomically(out_dir / rundir.CHAT_TEMPLATE, (hf_dir / rundir.CHAT_TEMPLATE).read_bytes())
    checkpoints = Checkpoints(rundir.checkpoints_dir(out_dir))
    checkpoints.save(0, {"params": jax.tree.map(jax.numpy.asarray, params)})
    checkpoints.close()  # once its checksums are written
    rundir.write_source(out_dir, family.model_type)
    rundir.write_config(out_dir, cfg)  # last: a run directory only once complete
    return cfg, left_out


def export_run(run_dir: str | Path, hf_dir: str | Path) -> dict:
    """Writes config.json and model.safetensors (and the run's tokenizer files) that transformers loads, in
    the family the run was imported from, else the first that holds its model. The bos/eos ids
    are the config's, else the run's tokenizer's. A LoRA run is exported with its adapters folded
    into the weights (zoo.lora.peft writes them apart). Returns the Hugging Face config."""
    source = rundir.read_source(Path(run_dir))  # first: refused before the params are read
    quantization = rundir.read_config(rundir.check_path(Path(run_dir))).model.quantization
    if quantization != "none":
        raise HFConfigError(f"{run_dir} holds {quantization}-quantized weights; export the float run it was quantized from")
    run = runs.load(run_dir)
    if run.model.lora is not None:
        source = source or rundir.read_source(Path(run.config.train.init_from))
        config, params = merged(run)
        run = dataclasses.replace(run, config=config, model=build(config.model), params=params)
    try:
        family, hf_config = config_to_hf(_with_tokenizer_ids(run.config.model, run.tokenizer), source)
    except HFConfigError as error:
        if source is None:
            raise
        raise HFConfigError(f"{Path(run_dir) / rundir.SOURCE}: {error}; delete it to let export choose a family") from None
    tensors = mapping.to_hf(run.model, family.layout(run.config.model, None), run.params)
    hf_dir = Path(hf_dir)
    hf_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, hf_dir / "model.safetensors", metadata={"format": "pt"})
    (hf_dir / "config.json").write_text(json.dumps(hf_config, indent=2))
    for name in rundir.TOKENIZER_FILES:
        if (Path(run_dir) / name).is_file():
            shutil.copyfile(Path(run_dir) / name, hf_dir / name)
    return hf_config


def _with_tokenizer_ids(model: zoo_config.ModelConfig, tokenizer: TextTokenizer | None) -> zoo_config.ModelConfig:
    """`model` with the tokenizer's bos and eos ids where it sets none (a tokenizer gives -1 for none)."""
    if tokenizer is None:
        return model
    bos = model.bos_id if model.bos_id is not None or tokenizer.bos_id < 0 else tokenizer.bos_id
    eos = model.eos_ids or ((tokenizer.eos_id,) if tokenizer.eos_id >= 0 else ())
    return dataclasses.replace(model, bos_id=bos, eos_ids=eos)
