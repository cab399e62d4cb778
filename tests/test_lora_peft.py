"""LoRA adapters to and from Hugging Face PEFT: the same logits in zoo as in PyTorch, both ways."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from hf_cases import hf_model
from test_lora import randomized
from zoo import config, runs
from zoo.hf import import_run
from zoo.hf.__main__ import main as hf_main
from zoo.new_run import write_run
from zoo.lora.__main__ import main as lora_main
from zoo.models import build

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

TOKENS = np.random.default_rng(0).integers(0, 97, size=(2, 12))
LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def torch_logits(model):
    with torch.no_grad():
        return model(torch.from_numpy(TOKENS)).logits.numpy()


def zoo_logits(run_dir):
    run = runs.load(run_dir)
    return np.asarray(jax.jit(run.model.apply)(run.params, jnp.asarray(TOKENS)).logits)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A random transformers Llama (GQA, untied) and its zoo import: (the torch model, the run directory)."""
    directory = tmp_path_factory.mktemp("base")
    model = hf_model("llama")
    model.save_pretrained(directory / "hf", safe_serialization=True)
    import_run(directory / "hf", directory / "run")
    return model, directory


def peft_adapter(base_model, directory, targets, seed=0):
    """A random PEFT LoRA adapter (both factors random, so B A is not zero) saved to `directory`."""
    torch.manual_seed(seed)
    settings = peft.LoraConfig(r=4, lora_alpha=6, target_modules=targets, init_lora_weights=False)
    adapted = peft.get_peft_model(base_model, settings).eval()
    adapted.save_pretrained(directory)
    logits = torch_logits(adapted)
    adapted.unload()  # base_model as it was, for the next test
    return logits


@pytest.mark.parametrize("targets", [LINEAR, ["q_proj", "v_proj"]], ids=["every-linear", "q-v"])
def test_a_peft_adapter_imported_gives_the_logits_it_gives_in_pytorch(tmp_path, base, targets):
    hf, base_dir = base
    expected = peft_adapter(hf, tmp_path / "adapter", targets)
    lora_main(["import", str(tmp_path / "adapter"), str(base_dir / "run"), str(tmp_path / "lora")])
    np.testing.assert_allclose(zoo_logits(tmp_path / "lora"), expected, atol=1e-5, rtol=1e-5)

    lora_main(["merge", str(tmp_path / "lora"), str(tmp_path / "merged")])  # folded into a full run
    assert config.load(tmp_path / "merged" / "config.toml").train.lora is None
    np.testing.assert_allclose(zoo_logits(tmp_path / "merged"), expected, atol=1e-5, rtol=1e-5)
    hf_main(["export", str(tmp_path / "lora"), str(tmp_path / "hf-merged")])  # a LoRA run exports merged
    reloaded = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf-merged", dtype=torch.float32).eval()
    np.testing.assert_allclose(torch_logits(reloaded), expected, atol=1e-5, rtol=1e-5)


def test_zoo_adapters_exported_load_into_peft_with_the_same_logits(tmp_path, base):
    hf, base_dir = base
    base_config = config.load(base_dir / "run" / "config.toml")
    lora = config.LoraConfig(rank=3, alpha=5.0, targets=("attention.*", "ffn.up", "ffn.down"))
    model = build(base_config.model, lora)
    adapters = nnx.split_state(randomized(model.init(jax.random.key(0)), seed=4), nnx.LoRAParam, ...)[0]
    train = config.override(base_config, {"train.lora.rank": 3, "train.lora.alpha": 5.0, "train.lora.targets": list(lora.targets), "train.init_from": str(base_dir / "run")})
    write_run(tmp_path / "lora", train, adapters, 0, (base_dir / "run",))
    expected = zoo_logits(tmp_path / "lora")

    lora_main(["export", str(tmp_path / "lora"), str(tmp_path / "adapter")])
    settings = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert settings["r"] == 3 and settings["lora_alpha"] == 5.0
    hf_main(["export", str(base_dir / "run"), str(tmp_path / "hf-base")])
    hf_base = transformers.LlamaForCausalLM.from_pretrained(tmp_path / "hf-base", dtype=torch.float32).eval()
    assert not np.allclose(torch_logits(hf_base), expected, atol=1e-3)  # the adapters do change the logits
    adapted = peft.PeftModel.from_pretrained(hf_base, tmp_path / "adapter").eval()
    np.testing.assert_allclose(torch_logits(adapted), expected, atol=1e-5, rtol=1e-5)


def test_adapters_and_settings_peft_cannot_take_are_refused(tmp_path, base, capsys):
    hf, base_dir = base
    peft_adapter(hf, tmp_path / "adapter", ["q_proj"])
    settings = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    (tmp_path / "adapter" / "adapter_config.json").write_text(json.dumps(settings | {"use_dora": True}))
    with pytest.raises(SystemExit):
        lora_main(["import", str(tmp_path / "adapter"), str(base_dir / "run"), str(tmp_path / "lora")])
    assert "use_dora = True, which zoo's LoRA does not compute (it needs False)" in capsys.readouterr().err
    assert not (tmp_path / "lora").exists()

    base_config = config.load(base_dir / "run" / "config.toml")
    model = build(base_config.model, config.LoraConfig(rank=2, targets=("embedding",)))
    adapters = nnx.split_state(model.init(jax.random.key(0)), nnx.LoRAParam, ...)[0]
    with_embedding = config.override(base_config, {"train.lora.rank": 2, "train.lora.targets": ["embedding"], "train.init_from": str(base_dir / "run")})
    write_run(tmp_path / "embedding-lora", with_embedding, adapters, 0, (base_dir / "run",))
    with pytest.raises(SystemExit):
        lora_main(["export", str(tmp_path / "embedding-lora"), str(tmp_path / "out")])
    assert "the adapters on embedder.embedding have no PEFT form zoo writes (it writes those of linear layers)" in capsys.readouterr().err
