"""Training: data, loss, optimizer, step, checkpoints and the run loop."""

from zoo.train.loop import TrainingError, train

__all__ = ["TrainingError", "train"]
