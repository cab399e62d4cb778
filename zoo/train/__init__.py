"""Training: data, loss, optimizer, step, parallel strategies, checkpoints and the run loop."""

from zoo.train.loop import train
from zoo.train.workdir import TrainingError

__all__ = ["TrainingError", "train"]
