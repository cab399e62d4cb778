"""The persistent compilation cache: a second process loads what the first compiled."""

import os
import subprocess
import sys

from zoo import compile_cache

PROGRAM = """
import jax, jax.numpy as jnp
from zoo import compile_cache
events = []
jax.monitoring.register_event_listener(lambda name, **_: events.append(name))
print(compile_cache.enable())
jax.jit(lambda x: jnp.sin(x) @ x.T)(jnp.ones((8, 8))).block_until_ready()
print(sum(name.endswith("/cache_hits") for name in events), sum(name.endswith("/cache_misses") for name in events))
"""


def run(environment: dict) -> list[str]:
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", **environment}
    env.pop("XLA_FLAGS", None)
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split("\n")


def test_a_second_process_compiles_nothing_and_off_turns_it_off(tmp_path):
    cache = tmp_path / "cache"
    first = run({compile_cache.ENVIRONMENT: str(cache)})
    assert first[0] == str(cache) and first[1].split()[0] == "0" and any(cache.iterdir())
    second = run({compile_cache.ENVIRONMENT: str(cache)})
    hits, misses = map(int, second[1].split())
    assert hits >= 1 and misses == 0
    assert run({compile_cache.ENVIRONMENT: "off"})[0] == "None"


def test_the_default_is_the_user_cache_directory(monkeypatch, tmp_path):
    monkeypatch.delenv(compile_cache.ENVIRONMENT, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert compile_cache.default_directory() == tmp_path / "zoo" / "jax"
