"""Stage `train-dcgan` in a build: one run per dataset and config, resumed after a crash, with
the pictures the report shows (losses, a latent walk, the memorisation check) written beside it."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from shards import dataset_fingerprint
from wikifaces.core.errors import UserError
from wikifaces.core.files import atomic_write_text
from wikifaces.core.identity import results_hash
from wikifaces.core.paths import DataRoot

from .config import TrainConfig
from .quality import Judge
from .train import CHECKPOINT, TrainSummary, new_run_dir, train_dcgan

log = logging.getLogger("wikifaces.training")


def train_stage(config: TrainConfig, root: str | os.PathLike[str] | DataRoot | None = None, progress: bool = True,
                force: bool = False, on_progress: Callable[[int, int], None] | None = None,
                judge: Judge | None = None) -> TrainSummary:
    """Train; a run that a crash interrupted (same config, same dataset) is resumed from its last
    checkpoint rather than started again, unless `force`. The run is then `runs/latest-<dataset>.txt`.
    `judge` measures sample quality (see `training.quality`)."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    if config.dataset is None:
        raise UserError("train-dcgan needs a dataset: the folder of a published shard dataset")
    if not (Path(config.dataset) / "manifest.json").exists():
        raise UserError(f"no dataset at {config.dataset}: publish one first (`wikifaces publish`)")
    distributed, main = _ranks()
    if not main:  # a DDP rank: rank 0 chooses the run directory and keeps the books
        return train_dcgan(config, data.root, resume=config.resume, progress=False)
    name = Path(config.dataset).name
    pending = data.runs / f"pending-{name}.json"
    key = {"config": results_hash(config, data.root), "dataset": dataset_fingerprint(config.dataset)}
    # under DDP every rank must agree on the run: only an explicit `resume` continues one
    resume = config.resume or (None if force or distributed else _interrupted(pending, key))
    run = None
    if resume is None:
        run = new_run_dir(Path(config.runs_dir) if config.runs_dir else data.runs, config.desc).resolve()
        atomic_write_text(pending, json.dumps({"key": key, "run_dir": str(run)}))
    summary = train_dcgan(config, data.root, resume=resume, progress=progress, run_dir=run, on_progress=on_progress,
                          judge=judge)
    write_pictures(summary.run_dir, config.dataset)
    # absolute: the same root may be named relatively from another folder next time
    atomic_write_text(data.runs / f"latest-{name}.txt", str(Path(summary.run_dir).resolve()) + "\n")
    pending.unlink(missing_ok=True)
    summary.resumed = resume is not None
    return summary


def _ranks() -> tuple[bool, bool]:
    """(distributed, main process)."""
    import torch.distributed as dist

    distributed = dist.is_available() and dist.is_initialized()
    return distributed, not distributed or dist.get_rank() == 0


def _interrupted(pending: Path, key: dict[str, str]) -> Path | None:
    """The run a crash interrupted under the same key, if its checkpoint is there and it never finished."""
    if not pending.exists():
        return None
    state = json.loads(pending.read_text())
    run = Path(state["run_dir"])
    if state["key"] == key and (run / "checkpoints" / CHECKPOINT).exists() and not (run / "summary.json").exists():
        log.info("train-dcgan: resuming the interrupted run %s", run)
        return run
    return None


def write_pictures(run: Path, dataset: str | os.PathLike[str]) -> None:
    """The latent walk and the memorisation check of a finished run (once)."""
    from .tools import interpolate, memorisation

    if not (run / "interpolate-seed0.png").exists():
        interpolate(run, run / "interpolate-seed0.png", rows=6, steps=8)
    if not (run / "memorisation.png").exists():
        memorisation(run, dataset, run / "memorisation.png", n=8)
