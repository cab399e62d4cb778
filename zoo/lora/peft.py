"""Hugging Face PEFT LoRA adapters <-> zoo LoRA runs.

A PEFT adapter directory holds adapter_config.json (r, lora_alpha, target_modules) and
adapter_model.safetensors with, per adapted linear layer, base_model.model.{module}.lora_A.weight
[r, in] and lora_B.weight [out, r]; PEFT adds (lora_alpha / r) B A x, as zoo adds (alpha / r) (x A) B.
Each zoo weight and its Hugging Face tensor differ by a rearrangement (a transpose, heads split
out, rotary halves reordered), which the family's weight layout (zoo.hf) applies; it is read off
that layout once per kind of tensor, by sending the index of every element through it, and
applied to A's input side and B's output side.

Taken: linear layers whose tensor is a plain [out, in] rearrangement of one zoo weight. Refused,
naming the weight: adapters on embeddings and on experts (PEFT keeps them in other forms), and
PEFT options zoo does not compute (DoRA, rsLoRA, trained biases, per-module ranks).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path

import numpy as np
from flax import nnx
from safetensors.numpy import save_file

from zoo import config as zoo_config
from zoo import rundir, runs
from zoo.hf import mapping
from zoo.hf.families import config_to_hf
from zoo.hf.files import read_json, read_tensors
from zoo.new_run import check_new_run_directory, write_run
from zoo.models import build
from zoo.rundir import RunError

CONFIG, WEIGHTS = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."
UNSUPPORTED = {  # PEFT settings whose effect zoo's adapters do not compute, and what they must be
    "use_dora": False, "use_rslora": False, "bias": "none", "fan_in_fan_out": False, "modules_to_save": None,
    "rank_pattern": {}, "alpha_pattern": {}, "layers_to_transform": None, "target_parameters": None,
}


class PeftError(ValueError):
    """A PEFT adapter zoo cannot read, or zoo adapters PEFT cannot hold."""


@dataclasses.dataclass(frozen=True)
class Slot:
    """One Hugging Face linear layer and the zoo weight it is: module ("model.layers.0.self_attn.q_proj"),
    the zoo weight's path and index inside its stack, the zoo name targets match, and the layout rule."""

    module: str
    path: tuple[str, ...]
    index: tuple[int, ...]
    zoo_name: str
    rule: mapping.Rule

    @property
    def adapter(self) -> tuple[str, ...]:
        return (*self.path[:-1], self.path[-1] + "_lora")


def _slots(model_config: zoo_config.ModelConfig, source: str | None) -> list[Slot]:
    """Every single-weight slot of the Hugging Face layout of `model_config` (the family `source` names, else the first that holds it)."""
    family, _ = config_to_hf(model_config, source)
    found = []
    for name, targets, rule in mapping.slots(model_config, family.layout(model_config, None)):
        if len(targets) == 1 and name.endswith(".weight"):
            (path, index), = targets
            zoo_name = ".".join(path[:-1] if path[-1] in ("weight", "table") else path)
            found.append(Slot(name[: -len(".weight")], tuple(path), tuple(index), zoo_name, rule))
    return found


def _rearrangement(rule: mapping.Rule, shape: tuple[int, ...], num_in: int) -> tuple[np.ndarray, np.ndarray]:
    """(by_in, by_out) for a weight of `shape` whose first num_in dims are inputs: the Hugging Face
    tensor [out, in] holds zoo's flattened W[by_in[i], by_out[o]] at [o, i]. PeftError when the rule
    is not such a rearrangement."""
    return _rearrangement_cached(rule.hf, rule, shape, num_in)


@functools.lru_cache(maxsize=64)
def _rearrangement_cached(_name, rule, shape, num_in):
    size_in, size_out = math.prod(shape[:num_in]), math.prod(shape[num_in:])
    probe = np.asarray(rule.to_hf(np.arange(size_in * size_out, dtype=np.int64).reshape(shape)))
    if probe.ndim == 2 and probe.size == size_in * size_out and np.issubdtype(probe.dtype, np.integer):
        by_in, by_out = probe[0] // size_out, probe[:, 0] % size_out
        if np.array_equal(probe, by_in[None, :] * size_out + by_out[:, None]):
            return by_in, by_out
    raise PeftError(f"{rule.hf} is not a plain [out, in] rearrangement of its zoo weight")


def export_peft(run_dir: str | Path, peft_dir: str | Path) -> dict:
    """Writes the adapters of a LoRA run as a PEFT directory for its base exported by
    `python -m zoo.hf export BASE HF_DIR`; returns the adapter config."""
    run_dir, peft_dir = Path(run_dir), Path(peft_dir)
    run = runs.load(run_dir)
    lora = run.config.train.lora
    if lora is None:
        raise RunError(f"{run_dir} has no LoRA adapters (its config has no [train.lora])")
    base = Path(run.config.train.init_from)
    flat = mapping.flatten(nnx.split_state(run.params, nnx.LoRAParam, ...)[0])
    tensors, exported = {}, set()
    for slot in _slots(run.config.model, rundir.read_source(base)):
        if (*slot.adapter, "a") not in flat:
            continue
        if slot.path[-1] != "weight":  # an embedding table, or experts
            raise PeftError(f"the adapters on {slot.zoo_name} have no PEFT form zoo writes (it writes those of linear layers)")
        a, b = (np.asarray(flat[(*slot.adapter, side)][slot.index], np.float32) for side in "ab")
        weight_shape = a.shape[:-1] + b.shape[1:]
        by_in, by_out = _rearrangement(slot.rule, weight_shape, a.ndim - 1)
        rank = a.shape[-1]
        tensors[f"{PREFIX}{slot.module}.lora_A.weight"] = np.ascontiguousarray(a.reshape(-1, rank)[by_in].T)
        tensors[f"{PREFIX}{slot.module}.lora_B.weight"] = np.ascontiguousarray(b.reshape(rank, -1)[:, by_out].T)
        exported.add(slot.adapter)
    left = sorted({path[:-1] for path in flat} - exported)
    if left:
        raise PeftError(f"the adapters on {'.'.join(left[0][:-1])} have no PEFT form zoo writes (PEFT's LoRA holds linear layers)")
    modules = sorted({name.split(".lora_")[0][len(PREFIX):] for name in tensors})
    adapter_config = {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora.rank, "lora_alpha": lora.scale_alpha,
        "lora_dropout": lora.dropout, "target_modules": modules, "bias": "none", "fan_in_fan_out": False,
        "use_rslora": False, "use_dora": False, "init_lora_weights": True, "modules_to_save": None,
        "base_model_name_or_path": None, "inference_mode": True,
    }
    peft_dir.mkdir(parents=True, exist_ok=True)
    save_file(tensors, peft_dir / WEIGHTS, metadata={"format": "pt"})
    (peft_dir / CONFIG).write_text(json.dumps(adapter_config, indent=2))
    return adapter_config


def _read_adapter_config(peft_dir: Path) -> tuple[int, float, float]:
    """(r, lora_alpha, lora_dropout) of a PEFT LoRA adapter; PeftError for any setting zoo does not compute."""
    if not (peft_dir / CONFIG).is_file():
        raise PeftError(f"{peft_dir} is not a PEFT adapter directory: it has no {CONFIG}")
    settings = read_json(peft_dir / CONFIG)
    if settings.get("peft_type") != "LORA":
        raise PeftError(f"{peft_dir / CONFIG}: peft_type {settings.get('peft_type')!r}; zoo reads LORA adapters")
    for key, expected in UNSUPPORTED.items():
        value = settings.get(key)
        if value not in (expected, None) and (value or expected):  # unset, or empty where nothing is expected
            raise PeftError(f"{peft_dir / CONFIG}: {key} = {value!r}, which zoo's LoRA does not compute (it needs {expected!r})")
    rank, alpha = settings.get("r"), settings.get("lora_alpha")
    if not isinstance(rank, int) or rank < 1 or not isinstance(alpha, (int, float)) or alpha <= 0:
        raise PeftError(f"{peft_dir / CONFIG}: r = {rank!r} and lora_alpha = {alpha!r}; both must be positive numbers")
    dropout = settings.get("lora_dropout") or 0.0
    if not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise PeftError(f"{peft_dir / CONFIG}: lora_dropout = {dropout!r}; it must be in [0, 1)")
    return rank, float(alpha), float(dropout)


def import_peft(peft_dir: str | Path, base_dir: str | Path, out_dir: str | Path) -> zoo_config.Config:
    """Writes a LoRA run of a PEFT adapter on `base_dir` (a zoo run of the model it adapts, e.g.
    imported by `python -m zoo.hf import`); returns its config. Everything is read and checked
    before anything is written."""
    peft_dir, base_dir, out_dir = Path(peft_dir), Path(base_dir).resolve(), Path(out_dir)
    check_new_run_directory(out_dir)
    rank, alpha, dropout = _read_adapter_config(peft_dir)
    tensors = read_tensors(peft_dir)  # its *.safetensors; pickles are refused
    base_config = rundir.read_config(runs.check_path(base_dir))
    if base_config.train.lora is not None:
        raise RunError(f"{base_dir} is itself a LoRA run; give the full run the adapter was trained on")
    slots = [s for s in _slots(base_config.model, rundir.read_source(base_dir)) if f"{PREFIX}{s.module}.lora_A.weight" in tensors]
    if not slots:
        raise PeftError(f"{peft_dir / WEIGHTS} adapts none of the base model's linear layers (names like {PREFIX}model.layers.0.self_attn.q_proj.lora_A.weight)")
    lora = zoo_config.LoraConfig(rank=rank, alpha=alpha, dropout=dropout, targets=tuple(sorted({s.zoo_name for s in slots})))
    model = build(base_config.model, lora)
    abstract = nnx.split_state(model.abstract_params, nnx.LoRAParam, ...)[0]
    flat = {path: np.zeros(v.shape, np.float32) for path, v in mapping.flatten(abstract).items()}
    used = set()
    for slot in slots:
        a_shape, b_shape = flat[(*slot.adapter, "a")].shape[len(slot.index):], flat[(*slot.adapter, "b")].shape[len(slot.index):]
        by_in, by_out = _rearrangement(slot.rule, a_shape[:-1] + b_shape[1:], len(a_shape) - 1)
        names = [f"{PREFIX}{slot.module}.lora_{side}.weight" for side in "AB"]
        lora_a, lora_b = (np.asarray(tensors.get(n, np.zeros(0)), np.float32) for n in names)
        if lora_a.shape != (rank, len(by_in)) or lora_b.shape != (len(by_out), rank):
            raise PeftError(f"{names[0]} and lora_B have shapes {list(lora_a.shape)}, {list(lora_b.shape)}; r = {rank} and the base model need {[rank, len(by_in)]}, {[len(by_out), rank]}")
        a, b = np.zeros((len(by_in), rank), np.float32), np.zeros((rank, len(by_out)), np.float32)
        a[by_in], b[:, by_out] = lora_a.T, lora_b.T
        flat[(*slot.adapter, "a")][slot.index] = a.reshape(a_shape)
        flat[(*slot.adapter, "b")][slot.index] = b.reshape(b_shape)
        used.update(names)
    unused = sorted(set(tensors) - used)
    if unused:
        raise PeftError(f"{peft_dir / WEIGHTS} holds tensors zoo has no place for: {', '.join(unused[:3])}" + (" ..." if len(unused) > 3 else ""))
    adapters = mapping.filled(abstract, flat)
    train = dataclasses.replace(base_config.train, lora=lora, init_from=str(base_dir))
    config = dataclasses.replace(base_config, train=train)
    write_run(out_dir, config, adapters, 0, (base_dir,))
    return config
