"""Training: data, loss, optimizer, step, parallel strategies, checkpoints and the run loop."""

from zoo.train.interrupt import Interrupted
from zoo.train.loop import train
from zoo.train.workdir import Diverged, TrainingError

__all__ = ["Diverged", "Interrupted", "TrainingError", "train"]
