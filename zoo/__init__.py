"""zoo: a JAX/Flax model zoo of language-model building blocks and whole models."""

__version__ = "0.1.0"
