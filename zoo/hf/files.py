"""Reading a Hugging Face model directory: its JSON files, safetensors weights and
tokenizers (sentencepiece tokenizer.model, tokenizer.json), each refused with one clear
HFConfigError when damaged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open

from zoo.hf.mapping import HFConfigError
from zoo.tokenizer import HFTokenizer, Tokenizer

INDEX = "model.safetensors.index.json"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def read_json(path: Path):
    """The parsed JSON document in `path` (UTF-8)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise HFConfigError(f"{path} is not UTF-8 text (byte {error.start} is not): not a JSON file") from None
    if not text.strip():
        raise HFConfigError(f"{path} is empty; it should hold a JSON object")
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        raise HFConfigError(f"{path} is not valid JSON: {error}") from None


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of `directory`: those its index names, else every *.safetensors."""
    index = directory / INDEX
    if index.is_file():
        contents = read_json(index)
        weight_map = contents.get("weight_map") if isinstance(contents, dict) else None
        if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(v, str) for v in weight_map.values()):
            raise HFConfigError(f"{index} has no weight_map (an object naming the shard file of each tensor)")
        names = sorted(set(weight_map.values()))
        missing = [name for name in names if not (directory / name).is_file()]
        if missing:
            raise HFConfigError(f"{index} names shard files that {directory} does not hold: {', '.join(missing)}")
        return [directory / name for name in names]
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    pickled = sorted(p.name for p in directory.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise HFConfigError(
            f"{directory} holds only pickled weights ({', '.join(pickled)}); zoo never unpickles files. "
            "Convert them to safetensors first (transformers: model.save_pretrained(dir, safe_serialization=True))"
        )
    raise HFConfigError(f"{directory} holds no *.safetensors weights")


def read_tensors(directory: Path) -> dict[str, np.ndarray]:
    """Every tensor of the safetensors files in `directory` (through model.safetensors.index.json
    when there is one), as numpy arrays."""
    tensors = {}
    for file in weight_files(Path(directory)):
        try:
            with safe_open(file, framework="flax") as handle:  # flax: bfloat16 reads without torch
                for name in handle.keys():
                    tensors[name] = np.asarray(handle.get_tensor(name))
        except (SafetensorError, OSError, ValueError, TypeError) as error:
            raise HFConfigError(f"{file} is not a readable safetensors file: {error}") from None
    return tensors


def read_tokenizer(path: Path, vocab_size: int) -> Tokenizer:
    """The sentencepiece tokenizer.model at `path`; refused when it is not one, or has more pieces than the model has ids."""
    try:
        tokenizer = Tokenizer.load(path)
    except ValueError as error:
        raise HFConfigError(f"{error}; remove it, or replace it with the model's sentencepiece tokenizer.model") from None
    if tokenizer.vocab_size > vocab_size:
        raise HFConfigError(f"{path} has {tokenizer.vocab_size} pieces, more than the model's vocab_size={vocab_size}")
    return tokenizer


def read_hf_tokenizer(path: Path, config_path: Path | None, vocab_size: int) -> HFTokenizer:
    """The tokenizer.json at `path` (with its tokenizer_config.json at `config_path`, if any);
    refused when either is damaged, or it has more tokens than the model has ids."""
    try:
        tokenizer = HFTokenizer.load(path, config_path)
    except ValueError as error:
        raise HFConfigError(f"{error}; remove it, or replace it with the model's own") from None
    if tokenizer.vocab_size > vocab_size:
        raise HFConfigError(f"{path} has {tokenizer.vocab_size} tokens, more than the model's vocab_size={vocab_size}")
    return tokenizer
