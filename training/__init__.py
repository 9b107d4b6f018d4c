"""Stage `train-dcgan`: DCGAN as the paper specifies it, reading our shards, on a GPU or the CPU.

The names below load on first use, so that `training.config` (which the pipeline's registry and
the flows import for their parameters) never pays for torch."""

from __future__ import annotations

from wikifaces.core.lazy import lazy_exports

_FROM = {
    "TrainConfig": "config",
    "Discriminator": "models", "Generator": "models", "build_models": "models", "init_weights": "models",
    "sample_z": "models",
    "train_stage": "stage",
    "arithmetic": "tools", "generate_grid": "tools", "interpolate": "tools", "memorisation": "tools",
    "TrainSummary": "train", "load_checkpoint": "train", "train_dcgan": "train",
}

__getattr__ = lazy_exports(__name__, _FROM)
__all__ = sorted(_FROM)
