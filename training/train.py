"""Stage `train-dcgan`: the training loop, run directories, checkpoints and exact resume."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from shards import ShardError, open_dataset, verify_dataset
from shards.sheet import contact_sheet, write_png
from wikifaces.core.errors import BadConfig, UnsafeInput
from wikifaces.core.files import atomic_open, atomic_write_json
from wikifaces.core.paths import DataRoot
from wikifaces.core.version import code_version

from .augment import diff_augment
from .config import TrainConfig, parse_policy
from .data import (
    InMemoryBatches,
    StreamedBatches,
    decoded_bytes,
    load_tensor,
    reference_images,
    step_generator,
    to_model_input,
)
from .models import Generator, build_models, sample_z
from .quality import Judge, sample_quality

log = logging.getLogger("wikifaces.training")

CHECKPOINT = "latest.pt"
MODEL_FIELDS = ("image_size", "channels", "z_dim", "g_width", "d_width", "kernel")


@dataclass
class TrainSummary:
    run_dir: Path
    steps: int
    epochs_done: float
    images_per_second: float
    final: dict[str, float]
    warnings: list[str] = field(default_factory=list)
    data_fraction: float = 0.0  # share of the loop's time spent getting and preparing batches
    generator: nn.Module | None = field(default=None, repr=False)
    discriminator: nn.Module | None = field(default=None, repr=False)
    resumed: bool = False  # continued a run a crash interrupted
    augment: str = "none"  # what the run used, and why
    quality: dict[str, Any] = field(default_factory=dict)  # the last sample-quality measurement

    @property
    def counts(self) -> dict[str, Any]:
        """What the stage's receipt records."""
        return {"run_dir": str(self.run_dir), "steps": self.steps,
                "images_per_second": round(self.images_per_second, 2), "final": self.final,
                "warnings": self.warnings, "resumed": self.resumed, "augment": self.augment,
                "quality": self.quality}


# -- run directories -------------------------------------------------------------------------------------
def new_run_dir(runs: Path, desc: str) -> Path:
    """`runs/00001-<desc>`: one more than the highest number there."""
    runs.mkdir(parents=True, exist_ok=True)
    taken = [int(p.name.split("-", 1)[0]) for p in runs.iterdir() if p.name[:5].isdigit()]
    for k in range(max(taken, default=0) + 1, max(taken, default=0) + 100):
        run = runs / f"{k:05d}-{desc}"
        try:
            run.mkdir()
            return run
        except FileExistsError:  # another process took it
            continue
    raise RuntimeError(f"could not create a run directory in {runs}")


def _device(config: TrainConfig) -> torch.device:
    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise BadConfig("device 'cuda' was asked for but torch sees no GPU")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


# -- checkpoints -------------------------------------------------------------------------------------------
def save_checkpoint(path: Path, g: nn.Module, d: nn.Module, opt_g: torch.optim.Optimizer,
                    opt_d: torch.optim.Optimizer, step: int, epoch: int, fixed_noise: torch.Tensor,
                    config: TrainConfig) -> None:
    state = {
        "generator": g.state_dict(), "discriminator": d.state_dict(),
        "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "step": step, "epoch": epoch,
        "rng": {"torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
        "fixed_noise": fixed_noise.cpu(), "config": config.model_dump(mode="json"),
        "code_version": code_version(),
    }
    with atomic_open(path) as fh:
        torch.save(state, fh)


def load_checkpoint(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: tensors and plain containers only, so a file
    from an untrusted source cannot run code when it is opened."""
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if "weights_only" in str(exc) or "Unsupported global" in str(exc):
            raise UnsafeInput(f"{path} holds more than weights (pickled objects); it was refused: {exc}") from None
        raise


# -- samples, plots, warnings ------------------------------------------------------------------------------
@torch.no_grad()
def generate(g: Generator, z: torch.Tensor, batch: int = 256) -> np.ndarray:
    """uint8 NHWC images for z, with BatchNorm in training mode (as during training) but its
    running statistics left untouched."""
    buffers = {k: v.clone() for k, v in g.state_dict().items() if "running" in k or "num_batches" in k}
    was_training = g.training
    g.train()
    out = []
    for a in range(0, len(z), batch):
        x = g(z[a : a + batch]).float()
        out.append(((x.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu())
    g.load_state_dict({**g.state_dict(), **buffers})
    g.train(was_training)
    imgs = torch.cat(out).numpy()
    return np.repeat(imgs, 3, axis=3) if imgs.shape[3] == 1 else imgs


def diversity(images: np.ndarray) -> float:
    """Mean pairwise distance of 16x16 grey thumbnails: low means the samples look alike."""
    x = torch.from_numpy(images).float().mean(3, keepdim=True).permute(0, 3, 1, 2)
    x = nn.functional.adaptive_avg_pool2d(x, 16).flatten(1) / 255
    return float(torch.pdist(x).mean()) if len(x) > 1 else 0.0


def loss_figure(rows: list[dict[str, Any]]) -> Any:
    """Losses and D's outputs per logged step (metrics.jsonl rows): a matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in rows]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 3.6))
    a.plot(steps, [r["loss_d"] for r in rows], label="D loss", lw=1)
    a.plot(steps, [r["loss_g"] for r in rows], label="G loss", lw=1)
    a.set_xlabel("step")
    a.legend()
    a.set_title("losses")
    b.plot(steps, [r["d_x"] for r in rows], label="D(x)", lw=1)
    b.plot(steps, [r["d_g_z"] for r in rows], label="D(G(z))", lw=1)
    b.set_ylim(0, 1)
    b.set_xlabel("step")
    b.legend()
    b.set_title("discriminator outputs")
    fig.tight_layout()
    return fig


def plot_losses(metrics_path: Path, out: Path) -> None:
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if "loss_d" in r]
    if not rows:
        return
    fig = loss_figure(rows)
    with atomic_open(out) as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)


# -- the loop: setup, one step, monitoring, checkpointing ---------------------------------------------------
@dataclass
class TrainRun:
    """Everything `setup_run` makes: the run's place, its data, models and optimisers, and where it is."""

    config: TrainConfig
    device: torch.device
    distributed: bool
    rank: int
    world: int
    run_dir: Path
    data: Any
    batch: int
    steps_per_epoch: int
    total_steps: int
    g: nn.Module
    d: nn.Module
    g_train: nn.Module
    d_train: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    fixed_noise: torch.Tensor
    step: int
    autocast: Any
    criterion: nn.Module
    ones: torch.Tensor
    zeros: torch.Tensor
    augment: tuple[str, ...] = ()  # the DiffAugment policy; () for none
    augment_reason: str = "none"
    records: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"


@dataclass
class StepLosses:
    loss_real: torch.Tensor
    loss_fake: torch.Tensor
    loss_g: torch.Tensor
    out_real: torch.Tensor
    out_fake: torch.Tensor
    out_g: torch.Tensor


def resolve_augment(config: TrainConfig, records: int) -> tuple[tuple[str, ...], str]:
    """(DiffAugment policy or (), what was chosen and why), for a dataset of `records` images."""
    policy = parse_policy(config.augment_policy)
    if config.augment == "none":
        return (), "none"
    if config.augment == "diffaug":
        return policy, f"diffaug ({config.augment_policy})"
    if records < config.augment_below:
        return policy, f"diffaug ({config.augment_policy}; auto: {records} images < {config.augment_below})"
    return (), f"none (auto: {records} images >= {config.augment_below})"


def train_step(run: TrainRun, real: torch.Tensor, z: torch.Tensor, generator: torch.Generator | None = None
               ) -> StepLosses:
    """One DCGAN update, as the paper and pytorch/examples write it: D, then G, one step each.
    With DiffAugment, D sees T(x) and T(G(z)) in both updates (`generator` draws T's parameters)."""
    d_train, g_train, criterion = run.d_train, run.g_train, run.criterion
    if run.augment:
        gen = generator if generator is not None else torch.Generator().manual_seed(run.step)

        def aug(x: torch.Tensor) -> torch.Tensor:
            return diff_augment(x, run.augment, gen)
    else:
        def aug(x: torch.Tensor) -> torch.Tensor:
            return x
    # (1) Update D: maximise log D(x) + log(1 - D(G(z)))
    d_train.zero_grad(set_to_none=True)
    with run.autocast:
        out_real = d_train(aug(real))
        loss_real = criterion(out_real.float(), run.ones)
    loss_real.backward()
    with run.autocast:
        fake = g_train(z)
        out_fake = d_train(aug(fake.detach()))
        loss_fake = criterion(out_fake.float(), run.zeros)
    loss_fake.backward()
    run.opt_d.step()
    # (2) Update G: maximise log D(G(z)) (the non-saturating loss)
    g_train.zero_grad(set_to_none=True)
    with run.autocast:
        out_g = d_train(aug(fake))
        loss_g = criterion(out_g.float(), run.ones)
    loss_g.backward()
    run.opt_g.step()
    return StepLosses(loss_real, loss_fake, loss_g, out_real, out_fake, out_g)


def train_dcgan(config: TrainConfig, root: str | os.PathLike[str] | None = None,
                resume: str | os.PathLike[str] | None = None, progress: bool = True,
                run_dir: str | os.PathLike[str] | None = None,
                on_progress: Callable[[int, int], None] | None = None, judge: Judge | None = None) -> TrainSummary:
    """Train DCGAN on a shard dataset; with `resume`, continue the run in that directory exactly.
    `run_dir` starts the run in that (new) directory instead of the next numbered one, so that a
    caller knows where to resume it after a crash. `on_progress(step, total)` is called as
    metrics are logged (the Prefect flow turns it into a progress artifact). A `judge` (for face
    datasets, `faces.judge.FaceJudge`) measures sample quality every `quality_every` steps and at
    the end."""
    run = setup_run(config, root, resume, run_dir, progress)
    monitor = Monitor(run, on_progress, judge)
    columns = [TextColumn("[bold]train-dcgan"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
               TextColumn("{task.fields[status]}"), TimeRemainingColumn()]
    with Progress(*columns, disable=not (progress and run.main)) as bar:
        monitor.bar = (bar, bar.add_task("train", total=run.total_steps, completed=run.step, status=""))
        while run.step < run.total_steps:
            epoch, start = divmod(run.step, run.steps_per_epoch)
            batches = run.data.batches(epoch, start)
            while True:
                t0 = time.perf_counter()
                real_u8 = next(batches, None)
                if real_u8 is None:
                    break
                gen = step_generator(config.seed, run.step, 0, run.rank)
                real = to_model_input(real_u8, config.flip, gen, config.channels_last)
                z = sample_z(real.shape[0], config.z_dim, gen, run.device)
                # host time only: no synchronisation with the GPU in the step (it would idle it)
                monitor.data_seconds += time.perf_counter() - t0
                losses = train_step(run, real, z, step_generator(config.seed, run.step, 1, run.rank))
                run.step += 1
                monitor.after_step(real_u8, real.shape[0], losses)
                checkpoint_if_due(run)
                if run.step >= run.total_steps:
                    break
    return monitor.finish()


# -- setup -------------------------------------------------------------------------------------------------------
def setup_run(config: TrainConfig, root: str | os.PathLike[str] | None, resume: str | os.PathLike[str] | None,
              run_dir: str | os.PathLike[str] | None, progress: bool) -> TrainRun:
    """The runtime (device, seed, DDP), the run directory (new or resumed), the data (checked and
    loaded), the models and optimisers (restored on resume), and the run's config.json."""
    if config.dataset is None:
        raise BadConfig("no dataset: give TrainConfig(dataset=...) the folder of a published shard dataset")
    distributed, rank, world, device = _runtime(config)
    path, checkpoint = _open_run_dir(config, root, resume, run_dir, rank == 0, distributed)
    data, n, batch, mode, manifest = _open_data(config, device, rank, world, progress and rank == 0)
    run = _build(config, device, distributed, rank, world, path, data, batch, checkpoint)
    run.augment, run.augment_reason = resolve_augment(config, n)
    run.records = n
    if run.main and checkpoint is None:
        _write_run_config(run, n, mode, manifest)
    return run


def _runtime(config: TrainConfig) -> tuple[bool, int, int, torch.device]:
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    if config.batch_size % world:
        raise BadConfig(f"batch_size {config.batch_size} does not split over {world} processes")
    device = _device(config)
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = not config.deterministic
    if config.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=False)
    torch.manual_seed(config.seed)
    return distributed, rank, world, device


def _open_run_dir(config: TrainConfig, root: str | os.PathLike[str] | None, resume: str | os.PathLike[str] | None,
                  run_dir: str | os.PathLike[str] | None, main: bool, distributed: bool
                  ) -> tuple[Path, dict[str, Any] | None]:
    """(the run directory, the checkpoint to resume from or None). Under DDP rank 0 chooses."""
    checkpoint = None
    if resume is not None:
        path = Path(resume)
        ckpt_path = path / "checkpoints" / CHECKPOINT if path.is_dir() else path
        path = ckpt_path.parent.parent
        checkpoint = load_checkpoint(ckpt_path)
        stored = TrainConfig.model_validate(checkpoint["config"])
        changed = [f for f in MODEL_FIELDS if getattr(stored, f) != getattr(config, f)]
        if changed:
            raise BadConfig(f"cannot resume {path}: the model changed ({', '.join(changed)})")
    else:
        runs = Path(config.runs_dir) if config.runs_dir else DataRoot.resolve(root).runs
        chosen: Path | None = None
        if main:
            chosen = Path(run_dir) if run_dir is not None else new_run_dir(runs, config.desc)
        if distributed:
            names = [str(chosen) if main else None]
            dist.broadcast_object_list(names, src=0)
            chosen = Path(names[0])  # type: ignore[arg-type]
        assert chosen is not None
        path = chosen
    (path / "checkpoints").mkdir(parents=True, exist_ok=True)
    (path / "samples").mkdir(parents=True, exist_ok=True)
    return path, checkpoint


def _open_data(config: TrainConfig, device: torch.device, rank: int, world: int, progress: bool
               ) -> tuple[Any, int, int, str, dict[str, Any]]:
    """(batches, records, batch size, data mode, the manifest's summary). Checksums first (seconds
    for GBs), so that a damaged shard stops the run before step 0 with a clear message rather
    than with a decode error hours in."""
    check = verify_dataset(config.dataset)
    if not check.ok:
        problems = "; ".join(f"{c.file}: {', '.join(c.problems)}" for c in check.shards if not c.ok)
        raise ShardError(f"{config.dataset} is damaged ({problems}): training will not start on it. "
                         "Rebuild it (the publish stage) and check it with `wikifaces verify`")
    ds = open_dataset(config.dataset)
    n = len(ds)
    manifest = ds.manifest.model_dump(mode="json", include={"name", "count", "image"})
    ds.close()
    if n < 2:
        raise BadConfig(f"{config.dataset} has {n} records; training needs at least 2")
    batch = min(config.batch_size, n - n % world) if n < config.batch_size else config.batch_size
    need = decoded_bytes(n, config.image_size, config.channels)
    mode = config.data if config.data != "auto" else ("memory" if need <= config.max_memory_gb * 2**30 else "stream")
    if mode == "memory":
        data = InMemoryBatches(load_tensor(str(config.dataset), config.image_size, config.channels, progress),
                               batch, config.seed, config.flip, device, rank, world)
    else:
        data = StreamedBatches(str(config.dataset), config.image_size, config.channels, batch, config.seed,
                               config.flip, device, config.workers, rank, world)
    return data, n, batch, mode, manifest


def _build(config: TrainConfig, device: torch.device, distributed: bool, rank: int, world: int, run_dir: Path,
           data: Any, batch: int, checkpoint: dict[str, Any] | None) -> TrainRun:
    """Models and optimisers as the paper sets them (Adam 2e-4, beta1 0.5), restored on resume."""
    g, d = build_models(config.image_size, config.z_dim, config.g_width, config.d_width, config.channels,
                        config.kernel)
    fixed_noise = sample_z(config.fixed_samples, config.z_dim, torch.Generator().manual_seed(config.seed + 12345))
    step = 0
    if checkpoint is not None:
        g.load_state_dict(checkpoint["generator"])
        d.load_state_dict(checkpoint["discriminator"])
        fixed_noise = checkpoint["fixed_noise"]
        step = int(checkpoint["step"])
    fmt = torch.channels_last if config.channels_last else torch.contiguous_format
    g.to(device, memory_format=fmt)
    d.to(device, memory_format=fmt)
    fused = device.type == "cuda"  # one kernel for the whole update; the CPU keeps the reference path
    opt_g = torch.optim.Adam(g.parameters(), lr=config.lr, betas=(config.beta1, config.beta2), fused=fused)
    opt_d = torch.optim.Adam(d.parameters(), lr=config.lr, betas=(config.beta1, config.beta2), fused=fused)
    if checkpoint is not None:
        opt_g.load_state_dict(checkpoint["opt_g"])
        opt_d.load_state_dict(checkpoint["opt_d"])
        torch.set_rng_state(checkpoint["rng"]["torch"])
        if torch.cuda.is_available() and checkpoint["rng"]["cuda"]:
            torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    g_train, d_train = g, d
    if distributed:
        ids = [device.index] if device.type == "cuda" else None
        g_train = DistributedDataParallel(g, device_ids=ids, broadcast_buffers=False)
        d_train = DistributedDataParallel(d, device_ids=ids, broadcast_buffers=False)
    if config.compile:
        g_train, d_train = torch.compile(g_train), torch.compile(d_train)
    bf16 = _bf16(config, device)
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    return TrainRun(config, device, distributed, rank, world, run_dir, data, batch, data.steps_per_epoch,
                    config.max_steps or config.epochs * data.steps_per_epoch, g, d, g_train, d_train, opt_g, opt_d,
                    fixed_noise, step, autocast, nn.BCEWithLogitsLoss(), torch.ones(batch // world, device=device),
                    torch.zeros(batch // world, device=device))


def _bf16(config: TrainConfig, device: torch.device) -> bool:
    return config.precision == "bf16" or (config.precision == "auto" and device.type == "cuda")


def _write_run_config(run: TrainRun, n: int, mode: str, manifest: dict[str, Any]) -> None:
    """The resolved options, written before step 0 (as stylegan2-ada does)."""
    device = run.device
    atomic_write_json(run.run_dir / "config.json", {
        "config": run.config.model_dump(mode="json"), "code_version": code_version(), "torch": torch.__version__,
        "device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda"
        else platform.processor() or platform.machine(), "world_size": run.world, "data_mode": mode,
        "records": n, "batch_size": run.batch, "steps_per_epoch": run.steps_per_epoch,
        "total_steps": run.total_steps, "bf16": _bf16(run.config, device), "dataset_manifest": manifest,
        "augment": run.augment_reason,
        "parameters": {"generator": sum(p.numel() for p in run.g.parameters()),
                       "discriminator": sum(p.numel() for p in run.d.parameters())},
    })


# -- checkpointing -------------------------------------------------------------------------------------------------
def checkpoint_if_due(run: TrainRun) -> None:
    """Every `checkpoint_every` steps, at the end of every epoch and at the last step."""
    step = run.step
    if step % run.config.checkpoint_every == 0 or step == run.total_steps or step % run.steps_per_epoch == 0:
        if run.main:
            save_checkpoint(run.run_dir / "checkpoints" / CHECKPOINT, run.g, run.d, run.opt_g, run.opt_d, step,
                            step // run.steps_per_epoch, run.fixed_noise, run.config)
        if run.distributed:
            dist.barrier()


# -- monitoring: metrics, samples, warnings ---------------------------------------------------------------------------
class Monitor:
    """What a run says about itself: metrics every 10 steps (metrics.jsonl, the progress bar,
    `on_progress`), fixed-noise samples, sample quality when there is a judge, and a warning (once
    each) when D wins or samples collapse.

    The step never waits for the GPU: each step's losses and D outputs are summed on the device
    and read (one synchronisation) only when metrics are logged, as means over the steps since the
    last row; the "D wins" streak is counted on the device too."""

    def __init__(self, run: TrainRun, on_progress: Callable[[int, int], None] | None,
                 judge: Judge | None = None) -> None:
        self.run = run
        self.on_progress = on_progress
        self.judge = judge
        self.bar: tuple[Any, Any] | None = None
        self.warnings: list[str] = []
        self._warned: set[str] = set()
        self.real_diversity: float | None = None
        self.low_run = torch.zeros((), device=run.device)  # steps in a row with D loss < 0.05
        self.low_peak = torch.zeros((), device=run.device)
        self.sums = torch.zeros(5, device=run.device)  # losses and D outputs summed since the last log
        self._event: Any = None  # the CUDA event of the last log
        self.summed = 0
        self.last: dict[str, float] = {}
        # without a judge, say why nothing was measured rather than leave a blank
        self.quality: dict[str, Any] = {} if judge is not None else {
            "not_measured": "no judge: sample quality is measured on face datasets (dlib's face descriptor and our "
                            "detector); no registry package ships the weights of a general image model"}
        self._quality_step = -1
        self._real: np.ndarray | None = None
        self._real_cache: dict[str, object] = {}
        self.data_seconds = 0.0
        self.t_start = self.t_last = time.perf_counter()
        self.images_total = self.img_since = 0

    def warn(self, kind: str, message: str) -> None:
        if kind in self._warned:  # each failure mode is reported once, when first seen
            return
        self._warned.add(kind)
        self.warnings.append(message)
        log.warning(message)
        if self.run.main:
            with open(self.run.metrics_path, "a") as fh:
                fh.write(json.dumps({"step": self.run.step, "warning": message}) + "\n")

    def after_step(self, real_u8: torch.Tensor, n_real: int, losses: StepLosses) -> None:
        run = self.run
        self.images_total += n_real * run.world
        self.img_since += n_real * run.world
        with torch.no_grad():
            stats = torch.stack([(losses.loss_real + losses.loss_fake).float(), losses.loss_g.float(),
                                 *(torch.sigmoid(o.float()).mean() for o in
                                   (losses.out_real, losses.out_fake, losses.out_g))])
            self.low_run = torch.where(stats[0] < 0.05, self.low_run + 1, torch.zeros_like(self.low_run))
            self.low_peak = torch.maximum(self.low_peak, self.low_run)
            self.sums += stats
        self.summed += 1
        if run.step % 10 == 0 or run.step == run.total_steps or run.step == 1:
            values = (self.sums / self.summed).tolist()  # the one synchronisation, every 10 steps
            self.sums.zero_()
            self.summed = 0
            need = max(50, run.steps_per_epoch // 2)
            if int(self.low_peak) >= need:
                self.warn("d_wins", f"the discriminator has won: its loss stayed under 0.05 for {need} steps, so "
                          "the generator gets almost no gradient (try --augment diffaug, fewer D updates, a lower D "
                          "learning rate or label smoothing)")
            if run.main:
                self.log_metrics(values)
        if run.main and (run.step % run.config.sample_every == 0 or run.step == run.total_steps):
            self.real_diversity = self.sample_and_check(real_u8, self.real_diversity)
        every = run.config.quality_every
        if run.main and every and run.step % every == 0:
            self.measure_quality()

    def _interval(self, now: float) -> float:
        """Seconds since the last log: on a GPU by CUDA events (the device's own clock, at a point
        where the loop synchronises anyway), else by the host's clock."""
        if self.run.device.type != "cuda":
            return now - self.t_last
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        event.synchronize()
        last, self._event = self._event, event
        return last.elapsed_time(event) / 1000 if last is not None else now - self.t_last

    def log_metrics(self, values: list[float]) -> None:
        run, now = self.run, time.perf_counter()
        loss_d, loss_g, d_x, d_g_z, d_g_z_after = values
        self.last = {"step": run.step, "epoch": round(run.step / run.steps_per_epoch, 3), "loss_d": round(loss_d, 5),
                     "loss_g": round(loss_g, 5), "d_x": round(d_x, 5), "d_g_z": round(d_g_z, 5),
                     "d_g_z_after": round(d_g_z_after, 5),
                     "images_per_second": round(self.img_since / max(1e-9, self._interval(now)), 2)}
        self.t_last, self.img_since = now, 0
        with open(run.metrics_path, "a") as fh:
            fh.write(json.dumps(self.last) + "\n")
        if self.bar is not None:
            bar, task = self.bar
            bar.update(task, completed=run.step, status=f"D {loss_d:.3f} G {loss_g:.3f} "
                                                        f"{self.last['images_per_second']:.0f} img/s")
        if self.on_progress is not None:
            self.on_progress(run.step, run.total_steps)

    def measure_quality(self) -> None:
        """Sample quality of `quality_samples` samples of a fixed noise against as many training
        images (metrics.jsonl row `{"step", "quality"}`). Touches no training state or RNG."""
        run, config = self.run, self.run.config
        if self.judge is None or self._quality_step == run.step:
            return
        t0 = time.perf_counter()
        if self._real is None:
            self._real = reference_images(str(config.dataset), config.image_size, config.channels,
                                          config.quality_samples, config.seed)
        z = sample_z(config.quality_samples, config.z_dim, torch.Generator().manual_seed(config.seed + 54321))
        samples = generate(run.g, z.to(run.device))
        self.quality = {"step": run.step, **sample_quality(self.judge, samples, self._real, self._real_cache)}
        self.quality["seconds"] = round(time.perf_counter() - t0, 2)
        self._quality_step = run.step
        with open(run.metrics_path, "a") as fh:
            fh.write(json.dumps({"step": run.step, "quality": self.quality}) + "\n")

    def sample_and_check(self, real_u8: torch.Tensor, real_div: float | None) -> float:
        """Write the fixed-noise grid; warn when the samples are far less varied than real images."""
        run = self.run
        samples = generate(run.g, run.fixed_noise.to(run.device))
        write_png(run.run_dir / "samples" / f"step-{run.step:07d}.png",
                  contact_sheet(list(samples), cols=int(math.sqrt(len(samples))), cell=64))
        if real_div is None:
            real = real_u8[:64].permute(0, 2, 3, 1).cpu().numpy()
            real_div = diversity(real if real.shape[3] == 3 else np.repeat(real, 3, 3))
        div = diversity(samples)
        warmed_up = run.step >= min(500, max(100, run.total_steps // 2))  # early samples all look alike
        if warmed_up and real_div and div < 0.25 * real_div:
            self.warn("collapse", f"low sample diversity at step {run.step}: the fixed-noise samples are {div:.3f} "
                      f"apart on average against {real_div:.3f} for real images (mode collapse?)")
        return real_div

    def finish(self) -> TrainSummary:
        """The last quality measurement, the loss plot and summary.json (rank 0), and the summary."""
        run = self.run
        elapsed = time.perf_counter() - self.t_start
        rate = self.images_total / elapsed if elapsed > 0 else 0.0
        data_fraction = self.data_seconds / elapsed if elapsed > 0 else 0.0
        if run.main:
            self.measure_quality()
            plot_losses(run.metrics_path, run.run_dir / "loss.png")
            atomic_write_json(run.run_dir / "summary.json", {
                "steps": run.step, "epochs": round(run.step / run.steps_per_epoch, 3),
                "images_per_second": round(rate, 2), "final": self.last,
                "data_fraction": round(data_fraction, 4), "warnings": self.warnings,
                "augment": run.augment_reason, "quality": self.quality})
        return TrainSummary(run.run_dir, run.step, run.step / run.steps_per_epoch, rate, self.last, self.warnings,
                            data_fraction, run.g, run.d, augment=run.augment_reason, quality=self.quality)
