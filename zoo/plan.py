"""Memory per device of a training (or inference) run, planned from shapes before anything compiles.

    python -m zoo.stats CONFIG --plan --mesh fsdp=64,tensor=4 --batch 256 --seq 8192 [--remat dots] [--device h100]

The terms, for one device of the mesh:

- parameters, optimizer state: the real TrainState (zoo.train.step.init_state with the
  optimizer) traced abstractly and laid out by the sharding rules (zoo.layers.layout), so
  each term is the bytes of that device's shards; with LoRA, the adapters, and the frozen
  base beside them as train.lora.base_weights holds it.
- gradients: one copy of what trains, laid out like it.
- batch: that device's rows of token ids and segment ids.
- activations: what the forward pass keeps for the backward pass under the remat policy,
  as jax itself lists it (jax.ad_checkpoint.print_saved_residuals of the real loss, traced
  for the device's rows of a micro-batch), those with a head, feed-forward or vocabulary
  dimension divided over the tensor axis.
- temporaries: the largest working set on top of those: the weights cast to the compute
  dtype and their gradients in it (when model.dtype is not param_dtype), one layer's
  intermediates as the backward pass rebuilds them (what that layer would keep without
  remat) and one chunk of the loss's logits with their gradient (train.loss_chunk tokens).

tests/test_plan.py checks the sums against XLA's memory_analysis() of the compiled step on 8
CPU devices (arguments: parameters, optimizer state and batch; temporaries: gradients,
activations and temporaries), and the README gives the tolerance reached.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import re

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from zoo.config import Config, LoraConfig
from zoo.hardware import Accelerator
from zoo.layers.layout import partition_spec
from zoo.layers.param import logical_axes
from zoo.models import Model, build
from zoo.sharding import BATCH_AXES, MESH_AXES

OPTIMIZERS = ("adamw", "lion", "sgd")  # train.py trains with adamw; the others show what their state would take


class PlanError(ValueError):
    """A plan that cannot be made as asked; its message names the setting and what would do."""


@dataclasses.dataclass(frozen=True)
class MeshShape:
    """Mesh axis sizes, all of MESH_AXES (1 where not given): all partition_spec needs of a mesh."""

    shape: dict[str, int]

    @classmethod
    def parse(cls, text: str) -> MeshShape:
        """"fsdp=64,tensor=4" -> sizes; PlanError naming the part that is not axis=size."""
        sizes = dict.fromkeys(MESH_AXES, 1)
        for part in filter(None, (p.strip() for p in text.split(","))):
            name, _, value = part.partition("=")
            if name not in MESH_AXES or not value.isdigit() or int(value) < 1:
                raise PlanError(f"--mesh: {part!r} is not axis=size with axis one of {', '.join(MESH_AXES)} and size >= 1")
            sizes[name] = int(value)
        return cls(sizes)

    @property
    def devices(self) -> int:
        return math.prod(self.shape.values())

    @property
    def batch_devices(self) -> int:
        return math.prod(self.shape[a] for a in BATCH_AXES)

    def __str__(self) -> str:
        return " ".join(f"{name}={size}" for name, size in self.shape.items())


@dataclasses.dataclass(frozen=True)
class Plan:
    """Bytes per device of each term (see the module), and what they were planned for."""

    mesh: MeshShape
    batch: int
    seq: int
    remat: str
    optimizer: str
    lora: int | None
    parameters: int  # what trains: every parameter, or the LoRA adapters
    frozen_base: int
    optimizer_state: int
    batch_bytes: int
    activations: int
    weight_copies: int  # the weights cast to the compute dtype (when it is not param_dtype), and their gradients
    layer_working: int
    loss_working: int
    kv_cache: int  # inference: the KV cache (and recurrent state) of batch rows of seq tokens

    @property
    def gradients(self) -> int:
        """One copy of what trains, laid out like it."""
        return self.parameters

    @property
    def temporaries(self) -> int:
        return self.weight_copies + self.layer_working + self.loss_working

    @property
    def terms(self) -> dict[str, int]:
        """The training terms by name, in the order printed."""
        return {
            "parameters": self.parameters, "frozen base": self.frozen_base, "gradients": self.gradients,
            "optimizer state": self.optimizer_state, "batch": self.batch_bytes, "activations": self.activations,
            "temporaries": self.temporaries,
        }

    @property
    def training(self) -> int:
        return sum(self.terms.values())

    @property
    def inference(self) -> int:
        return self.parameters + self.frozen_base + self.kv_cache

    def per_row(self) -> float:
        """Bytes per device that grow with each row of the device's batch (activations, layer working set, batch)."""
        return (self.activations + self.layer_working + self.batch_bytes) / self.device_rows

    @property
    def device_rows(self) -> int:
        return self.batch // self.mesh.batch_devices

    def largest_batch(self, usable: int, accumulation: int = 1) -> int:
        """The largest global batch (a multiple of the batch devices and accumulation steps) whose
        training terms fit `usable` bytes per device; 0 when not even one row does."""
        fixed = self.training - self.per_row() * self.device_rows
        rows = math.floor((usable - fixed) / self.per_row()) if usable > fixed else 0
        step = self.mesh.batch_devices * accumulation
        return max(rows * self.mesh.batch_devices // step * step, 0)

    def overflow(self, usable: int) -> str | None:
        """None when training fits `usable` bytes; else one line naming the largest term and what would help."""
        if self.training <= usable:
            return None
        name, largest = max(self.terms.items(), key=lambda item: item[1])
        advice = {
            "activations": "a remat policy that keeps less (model.remat = \"full\"), a smaller batch, or more devices on data/fsdp",
            "temporaries": "a smaller batch or train.loss_chunk, or model.remat = \"full\"",
            "parameters": "more devices on fsdp or tensor, or LoRA on a bfloat16 or quantized base",
            "optimizer state": "more devices on fsdp or tensor, or LoRA",
            "gradients": "more devices on fsdp or tensor, or LoRA",
            "frozen base": "a quantized base (train.lora.base_weights), or more devices on fsdp",
            "batch": "a smaller batch",
        }[name]
        return (
            f"needs {gigabytes(self.training)} per device, more than the {gigabytes(usable)} it has; "
            f"the largest term is {name} ({gigabytes(largest)}): try {advice}"
        )


def gigabytes(size: float) -> str:
    return f"{size / 2**30:,.2f} GiB"


def per_device_bytes(tree, mesh: MeshShape) -> int:
    """Bytes one device holds of `tree` (abstract arrays and nnx Variables) laid out by the
    sharding rules: Variables by their logical axes, other arrays replicated."""
    total = 0
    for leaf in jax.tree.leaves(tree, is_leaf=lambda x: isinstance(x, nnx.Variable)):
        shape, dtype = tuple(leaf.shape), leaf.dtype
        spec = partition_spec(logical_axes(leaf), shape, mesh) if isinstance(leaf, nnx.Variable) else ()
        shard = list(shape)
        for index, entry in enumerate(spec):
            axes = () if entry is None else (entry,) if isinstance(entry, str) else entry
            shard[index] = -(-shape[index] // math.prod(mesh.shape[a] for a in axes))
        total += math.prod(shard) * jnp.dtype(dtype).itemsize
    return total


_RESIDUAL = re.compile(r"(bool|[a-z]+)(\d*)(?:_\w+)?\[([\d,]*)\]")


def saved_residuals(fn, *args) -> list[tuple[tuple[int, ...], int]]:
    """(shape, bytes per element) of each value jax keeps from fn(*args) for its backward pass,
    but the arguments themselves: print_saved_residuals's report, read back."""
    report = io.StringIO()
    with contextlib.redirect_stdout(report):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    kept = []
    for line in report.getvalue().splitlines():
        match = _RESIDUAL.match(line)
        if match is None or "from the argument" in line:
            continue
        kind, bits, dims = match.groups()
        shape = tuple(int(n) for n in dims.split(",") if n)
        kept.append((shape, 1 if kind == "bool" else max(int(bits or 8) // 8, 1)))
    return kept


def _tensor_dims(config) -> set[int]:
    """The sizes of the dims the tensor axis splits (heads, key/value heads, feed-forward, vocabulary)."""
    dims = {config.num_heads, config.num_kv_heads, config.ffn_dim, config.vocab_size}
    if config.moe is not None:
        dims |= {config.moe.expert_ffn_dim, config.moe.shared_ffn_dim or 0}
    return dims - {0, 1}


def residual_bytes(model: Model, rows: int, seq: int, run, tensor: int, chunk: int) -> int:
    """Bytes per device of the loss's saved residuals for `rows` rows of `seq` tokens (see the
    module), the loss's logits computed `chunk` positions at a time as in the real step."""
    from zoo.train.step import batch_sums, trainable, with_frozen

    trained, frozen = trainable(model, model.abstract_params)
    batch = {name: jax.ShapeDtypeStruct((rows, seq + 1), jnp.int32) for name in ("tokens", "segment_ids")}
    run = dataclasses.replace(run, seq_len=seq, loss_chunk=chunk * rows)

    def loss(params, frozen, batch):
        return batch_sums(model, with_frozen(params, jax.lax.stop_gradient(frozen)), batch, run)[0]

    split, total = _tensor_dims(model.config), 0
    for shape, itemsize in saved_residuals(loss, trained, frozen, batch):
        divided = tensor > 1 and any(d in split and d % tensor == 0 for d in shape[1:])
        total += math.prod(shape) * itemsize // (tensor if divided else 1)
    return total


def _optimizer(name: str, run):
    from zoo.train.optimizer import optimizer

    return {"adamw": lambda: optimizer(run), "lion": lambda: optax.lion(1e-4), "sgd": lambda: optax.sgd(1e-3)}[name]()


def _base_ratio(model: Model, scheme: str) -> float:
    """Bytes of the frozen base held as `scheme` (train.lora.base_weights) over its bytes as saved."""
    from zoo.stats import weight_bytes

    held, saved = weight_bytes(model), model.config.param_dtype
    return held[saved if scheme == "as_saved" else scheme] / held[saved]


def plan(config: Config, mesh: MeshShape, *, batch: int | None = None, seq: int | None = None, remat: str | None = None,
         optimizer: str = "adamw", lora: int | None = None) -> Plan:
    """The memory plan of training `config` on `mesh` (defaults: train.batch_size, train.seq_len,
    model.remat, the config's own train.lora unless `lora` gives a rank)."""
    from zoo.models.stack import REMAT_POLICIES
    from zoo.stats import kv_cache_bytes, recurrent_state_bytes
    from zoo.train.step import init_state, trainable

    run, model_config = config.train, config.model
    if model_config.kind == "encoder_decoder":
        raise PlanError("--plan plans train.py's step over rows of one token stream; an encoder_decoder model's source/target pairs are not planned yet")
    batch, seq, remat = batch or run.batch_size, seq or run.seq_len, remat or model_config.remat
    if remat not in REMAT_POLICIES:
        raise PlanError(f"--remat {remat!r}: choose one of {', '.join(REMAT_POLICIES)}")
    if optimizer not in OPTIMIZERS:
        raise PlanError(f"--optimizer {optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
    if not 1 <= seq <= model_config.max_seq_len:
        raise PlanError(f"--seq must be in 1..{model_config.max_seq_len:,} (model.max_seq_len), got {seq:,}")
    step = mesh.batch_devices * run.grad_accumulation
    if batch < 1:
        raise PlanError(f"--batch must be at least 1 row, got {batch}")
    if batch % step:
        raise PlanError(
            f"--batch {batch} does not split over the {mesh.batch_devices} batch devices (data x fsdp x expert)"
            + (f" times {run.grad_accumulation} accumulation steps" if run.grad_accumulation > 1 else "") + f"; use a multiple of {step}"
        )
    try:
        lora_config = run.lora if lora is None else LoraConfig(rank=lora, **({} if run.lora is None else {"targets": run.lora.targets}))
        model = build(dataclasses.replace(model_config, remat=remat), lora_config)
    except ValueError as error:
        raise PlanError(f"--lora: {error}") from None
    state = jax.eval_shape(lambda key: init_state(model, _optimizer(optimizer, run), key), jax.random.key(0))
    frozen = trainable(model, model.abstract_params)[1]
    frozen_bytes = 0
    if frozen is not None:
        frozen_bytes = round(per_device_bytes(frozen, mesh) * _base_ratio(model, lora_config.base_weights))
    micro = batch // run.grad_accumulation
    rows = micro // mesh.batch_devices  # a device's rows of one micro-batch
    chunk = max(1, min(seq, run.loss_chunk // micro))  # positions of the loss's logits at a time (zoo.train.loss)
    tensor = mesh.shape["tensor"]
    kept = residual_bytes(model, rows, seq, run, tensor, chunk)
    unrematted = kept if remat == "none" else residual_bytes(
        build(dataclasses.replace(model_config, remat="none"), lora_config), rows, seq, run, tensor, chunk
    )
    vocab = model_config.vocab_size // (tensor if model_config.vocab_size % tensor == 0 else 1)
    cache = batch * (kv_cache_bytes(model, seq) + recurrent_state_bytes(model)) if model_config.kind == "decoder" else 0
    shards_kv = model_config.attention.kind != "mla" and model_config.num_kv_heads % tensor == 0
    params_bytes = per_device_bytes(state.params, mesh)
    cast = jnp.dtype(model_config.dtype).itemsize / jnp.dtype(model_config.param_dtype).itemsize
    copies = 0 if model_config.dtype == model_config.param_dtype else round(cast * (2 * params_bytes + frozen_bytes))
    return Plan(
        mesh, batch, seq, remat, optimizer, None if lora_config is None else lora_config.rank,
        parameters=params_bytes, frozen_base=frozen_bytes,
        optimizer_state=per_device_bytes(state.opt_state, mesh),
        batch_bytes=2 * 4 * (batch // mesh.batch_devices) * (seq + 1),
        activations=kept, weight_copies=copies, layer_working=unrematted // model_config.num_layers,
        loss_working=2 * 4 * rows * chunk * vocab,
        kv_cache=cache // mesh.batch_devices // (tensor if shards_kv else 1),
    )


def as_data(plan: Plan, accelerator: Accelerator | None, accumulation: int = 1) -> dict:
    """The plan as JSON-ready data: the settings, bytes per device of each term and the totals,
    and with an accelerator whether training fits it, why not, and the largest batch that would."""
    data = {
        "mesh": plan.mesh.shape, "devices": plan.mesh.devices, "batch": plan.batch, "seq": plan.seq, "remat": plan.remat,
        "optimizer": plan.optimizer, "lora": plan.lora, "bytes_per_device": plan.terms,
        "training_bytes": plan.training, "inference_bytes": plan.inference, "kv_cache_bytes": plan.kv_cache,
    }
    if accelerator is not None:
        usable = accelerator.usable_bytes
        data |= {
            "device": accelerator.name, "device_bytes": accelerator.memory_bytes, "usable_bytes": usable,
            "fits": plan.training <= usable, "problem": plan.overflow(usable), "largest_batch": plan.largest_batch(usable, accumulation),
        }
    return data


def describe(plan: Plan, accelerator: Accelerator | None, accumulation: int = 1) -> list[str]:
    """The lines `zoo.stats --plan` prints."""
    data = as_data(plan, accelerator, accumulation)
    lines = [
        f"plan per device: mesh {plan.mesh} ({plan.mesh.devices} device{'s' * (plan.mesh.devices > 1)}), batch {plan.batch} x {plan.seq} tokens "
        f"({plan.device_rows} a device), remat {plan.remat}, {plan.optimizer}" + (f", LoRA rank {plan.lora}" if plan.lora else "")
    ]
    lines += [f"  {name:<18} {gigabytes(size):>12}" for name, size in plan.terms.items() if size or name != "frozen base"]
    lines.append(f"  {'training total':<18} {gigabytes(plan.training):>12}")
    lines.append(f"inference, {plan.batch} x {plan.seq} tokens: parameters + KV cache {gigabytes(plan.kv_cache)} = {gigabytes(plan.inference)}")
    if accelerator is not None:
        verdict = "training fits" if data["fits"] else f"training does not fit: {data['problem']}"
        lines.append(f"{accelerator.name} ({gigabytes(data['usable_bytes'])} usable of {gigabytes(accelerator.memory_bytes)}): {verdict}")
        largest, fixed = data["largest_batch"], plan.training - plan.per_row() * plan.device_rows
        why = "what does not grow with the batch is too large alone" if fixed > data["usable_bytes"] else "not even one row a device does"
        lines.append(f"the largest batch that fits: {largest}" if largest else f"no batch fits: {why}")
    return lines
