"""zoo.plan against the compiler: the memory of the real training step, compiled on 8 CPU devices."""

import json
import types

import jax
import jax.numpy as jnp
import pytest

from zoo import config, plan, stats
from zoo.hardware import ACCELERATORS
from zoo.models import build
from zoo.sharding import make_mesh
from zoo.train import preflight
from zoo.train.optimizer import optimizer
from zoo.train.parallel import ShardedJit
from zoo.train.step import trainable

MODEL = dict(vocab_size=512, d_model=64, num_layers=4, num_heads=4, num_kv_heads=2, ffn_dim=128, max_seq_len=256, attention={"kernel": "chunked"})
MOE = {"moe": {"num_experts": 4, "top_k": 2, "expert_ffn_dim": 64}}
TEMPORARIES_TOLERANCE = 0.25  # the README gives each case's error


def run_config(remat, *, model=None, **train):
    settings = dict(batch_size=16, seq_len=128, steps=100) | train
    return config.from_dict({"model": MODEL | {"remat": remat} | (model or {}), "train": settings})


def compiled_memory(cfg, sizes):
    """XLA's memory_analysis() of the sharded train step train.py runs, compiled for abstract inputs."""
    model, run = build(cfg.model, cfg.train.lora), cfg.train
    mesh = make_mesh(sizes)
    strategy = ShardedJit(model, optimizer(run), run, mesh)
    rows = {k: jax.ShapeDtypeStruct((run.batch_size, run.seq_len + 1), jnp.int32, sharding=strategy.batch_layout) for k in ("tokens", "segment_ids")}
    frozen = trainable(model, model.abstract_params)[1]
    if frozen is not None:
        frozen = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), frozen, strategy.frozen_layout)
    with jax.set_mesh(mesh):
        return strategy._step.lower(strategy.restore_target(), rows, frozen).compile().memory_analysis()


@pytest.mark.parametrize(
    "cfg, sizes",
    [
        (run_config("none"), {"data": 1}),
        (run_config("dots"), {"data": 8}),
        (run_config("full"), {"fsdp": 4, "tensor": 2}),
        (run_config("full", model={"dtype": "bfloat16"}), {"fsdp": 8}),
        (run_config("none", model=MOE), {"data": 1}),
        (run_config("full", init_from="base", lora={"rank": 8}), {"fsdp": 4}),
        (run_config("dots", grad_accumulation=2), {"data": 2}),
    ],
    ids=["none-1", "dots-data8", "full-fsdp4-tensor2", "bf16-full-fsdp8", "moe-none-1", "lora-full-fsdp4", "dots-accumulate2-data2"],
)
def test_the_plan_matches_the_compiled_step(cfg, sizes):
    memory = compiled_memory(cfg, sizes)
    planned = plan.plan(cfg, plan.MeshShape.parse(",".join(f"{k}={v}" for k, v in sizes.items())))
    arguments = planned.parameters + planned.frozen_base + planned.optimizer_state + planned.batch_bytes
    assert arguments == pytest.approx(memory.argument_size_in_bytes, abs=64)  # exact but the step counter and key
    assert planned.parameters + planned.optimizer_state == pytest.approx(memory.output_size_in_bytes, abs=1024)  # and the metrics
    temporaries = planned.gradients + planned.activations + planned.temporaries
    assert temporaries == pytest.approx(memory.temp_size_in_bytes, rel=TEMPORARIES_TOLERANCE)


def test_a_policy_that_keeps_less_plans_less_and_the_batch_scales_what_grows():
    cfg = run_config("none")
    mesh = plan.MeshShape.parse("data=1")
    kept = {remat: plan.plan(cfg, mesh, remat=remat).activations for remat in ("none", "dots", "full")}
    assert kept["none"] > kept["dots"] > kept["full"] > 0
    small, large = plan.plan(cfg, mesh, batch=8), plan.plan(cfg, mesh, batch=16)
    assert large.activations == pytest.approx(2 * small.activations, rel=0.01) and large.parameters == small.parameters
    fits = large.largest_batch(large.training)
    assert 16 <= fits < 18 and large.largest_batch(large.parameters) == 0


def test_sharding_splits_the_state():
    cfg = run_config("full")
    one, eight = plan.plan(cfg, plan.MeshShape.parse("data=1")), plan.plan(cfg, plan.MeshShape.parse("fsdp=8"))
    assert eight.parameters < one.parameters / 4 and eight.optimizer_state < one.optimizer_state / 4
    lora = plan.plan(cfg, plan.MeshShape.parse("data=1"), lora=4)
    assert lora.parameters < one.parameters / 10 and lora.frozen_base == pytest.approx(one.parameters, rel=0.01)


def test_overflow_names_the_largest_term():
    planned = plan.plan(run_config("none"), plan.MeshShape.parse("data=1"))
    assert planned.overflow(planned.training) is None
    problem = planned.overflow(planned.training // 2)
    assert "the largest term is activations" in problem and "model.remat" in problem


def test_train_py_warns_before_compiling_when_the_devices_are_too_small(monkeypatch):
    planned = plan.plan(run_config("none"), plan.MeshShape.parse("data=1"))
    gpu = types.SimpleNamespace(platform="gpu", device_kind="test GPU")
    monkeypatch.setattr(preflight, "device_memory", lambda device: (planned.training // 2, f"each {device.device_kind}"))
    warning = preflight.memory_plan_warning(run_config("none"), {"data": 1}, gpu)
    assert warning.startswith("this run may not fit each test GPU: it needs") and "the largest term is activations" in warning
    monkeypatch.setattr(preflight, "device_memory", lambda device: (planned.training * 2, "each test GPU"))
    assert preflight.memory_plan_warning(run_config("none"), {"data": 1}, gpu) is None
    assert preflight.memory_plan_warning(run_config("none"), {"data": 1}, jax.devices()[0]) is None  # a CPU: the host's to judge


def test_stats_cli_prints_the_plan(capsys):
    stats.main(["llama3-8b", "--plan", "--mesh", "fsdp=64,tensor=4", "--batch", "256", "--seq", "8192", "--remat", "dots", "--device", "h100"])
    out = capsys.readouterr().out
    assert "mesh data=1 fsdp=64 tensor=4 expert=1 (256 devices), batch 256 x 8192 tokens (4 a device), remat dots" in out
    assert "activations" in out and "h100 (60.00 GiB usable of 80.00 GiB)" in out and "the largest batch that fits:" in out
    stats.main(["tiny", "--plan", "--json", "--device", "v5e", "--lora", "4"])
    data = json.loads(capsys.readouterr().out)["plan"]
    assert data["fits"] and data["lora"] == 4 and data["usable_bytes"] == ACCELERATORS["v5e"].usable_bytes
    assert data["bytes_per_device"]["frozen base"] == 4 * stats.total_params(build(config.load("tiny").model))  # float32, one device


@pytest.mark.parametrize(
    "argv, message",
    [
        (["tiny", "--mesh", "fsdp=2"], "--mesh is a --plan setting; add --plan"),
        (["tiny", "--plan", "--mesh", "fsdp=two"], "--mesh: 'fsdp=two' is not axis=size"),
        (["tiny", "--plan", "--mesh", "pipeline=2"], "--mesh: 'pipeline=2' is not axis=size with axis one of data, fsdp, tensor, expert"),
        (["tiny", "--plan", "--batch", "12", "--mesh", "data=8"], "--batch 12 does not split over the 8 batch devices"),
        (["tiny", "--plan", "--seq", "4096"], "--seq must be in 1..256"),
        (["tiny", "--plan", "--remat", "some"], "--remat 'some': choose one of"),
        (["tiny", "--plan", "--optimizer", "adam"], "--optimizer 'adam': choose one of adamw, lion, sgd"),
        (["tiny", "--plan", "--device", "h300"], "--device 'h300': choose one of h100, h200"),
        (["tiny", "--plan", "--lora", "4096"], "--lora:"),
        (["tiny", "--plan", "--lora", "0"], "--lora: rank: must be positive, got 0"),
        (["tiny", "--plan", "--batch", "-16"], "--batch must be at least 1 row, got -16"),
        (["t5-base", "--plan"], "an encoder_decoder model's source/target pairs are not planned yet"),
    ],
)
def test_bad_plan_settings_get_one_clear_line(argv, message, capsys):
    with pytest.raises(SystemExit) as exit:
        stats.main(argv)
    assert exit.value.code == 2
    assert message in capsys.readouterr().err.strip().splitlines()[-1]
