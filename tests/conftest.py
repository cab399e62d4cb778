"""Test set-up: eight fake CPU devices, so sharded runs are tested without accelerators."""

import os

# Must happen before jax initialises its backends.
os.environ["XLA_FLAGS"] = " ".join(
    flag for flag in os.environ.get("XLA_FLAGS", "").split() if "host_platform_device_count" not in flag
) + " --xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import atexit  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

import jax  # noqa: E402
import pytest  # noqa: E402

# Many tests compile the same small programs; a session-wide persistent cache compiles each once.
_compilation_cache = tempfile.mkdtemp(prefix="zoo-test-jax-cache-")
atexit.register(shutil.rmtree, _compilation_cache, ignore_errors=True)
jax.config.update("jax_compilation_cache_dir", _compilation_cache)
os.environ["ZOO_COMPILE_CACHE"] = "off"  # train.py / sample.py in subprocesses compile afresh, as before; tests that want it set it
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)

from zoo import config  # noqa: E402


@pytest.fixture
def small_config():
    """A few-layer decoder small enough for exact float32 comparisons in tests."""

    def make(**model_overrides):
        model = dict(
            vocab_size=97, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2, ffn_dim=48, max_seq_len=64
        )
        model.update(model_overrides)
        return config.ModelConfig.from_dict(model)

    return make


@pytest.fixture
def key():
    return jax.random.key(0)
