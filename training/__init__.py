"""Stage `train-dcgan`: DCGAN as the paper specifies it, reading our shards, on a GPU or the CPU.

The names below load on first use, so that `training.config` (which the pipeline's registry and
the flows import for their parameters) never pays for torch."""

from __future__ import annotations

import importlib
from typing import Any

_FROM = {
    "TrainConfig": "config",
    "Discriminator": "models", "Generator": "models", "build_models": "models", "init_weights": "models",
    "sample_z": "models",
    "train_stage": "stage",
    "arithmetic": "tools", "generate_grid": "tools", "interpolate": "tools", "memorisation": "tools",
    "TrainSummary": "train", "load_checkpoint": "train", "train_dcgan": "train",
}


def __getattr__(name: str) -> Any:
    if name in _FROM:
        return getattr(importlib.import_module(f".{_FROM[name]}", __name__), name)
    raise AttributeError(f"module 'training' has no attribute {name!r}")


__all__ = sorted(_FROM)
