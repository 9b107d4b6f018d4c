"""Stage `train-dcgan`: DCGAN as the paper specifies it, reading our shards, on a GPU or the CPU."""

from .config import TrainConfig
from .models import Discriminator, Generator, build_models, init_weights, sample_z
from .train import TrainSummary, load_checkpoint, train_dcgan

__all__ = ["Discriminator", "Generator", "TrainConfig", "TrainSummary", "build_models", "init_weights",
           "load_checkpoint", "sample_z", "train_dcgan"]
