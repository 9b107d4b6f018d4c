"""Feeding the trainer from a published shard dataset.

When the decoded dataset fits (`max_memory_gb`), it is decoded once into a single uint8 tensor
(pinned host memory, or on the GPU when there is room) and batches are gathered from it by
index: no per-step decoding, no DataLoader workers. Otherwise a DataLoader streams records from
the shards. Either way the order of every epoch and every flip is derived from (seed, epoch) and
(seed, step) alone, so a resumed run sees exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import cv2
import numpy as np
import torch
from rich.progress import Progress
from torch.utils.data import DataLoader, Dataset

from shards import open_dataset
from wikifaces.core.imaging import centre_square

log = logging.getLogger("wikifaces.training")


def _fit(image: np.ndarray, size: int, channels: int) -> np.ndarray:
    """Centre square at `size` (`centre_square`); grey when channels == 1."""
    image = centre_square(image, size)
    if channels == 1:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)[:, :, None]
    return image


def decoded_bytes(n: int, size: int, channels: int) -> int:
    return n * size * size * channels


def load_tensor(path: str, size: int, channels: int, progress: bool = True, chunk: int = 2048) -> torch.Tensor:
    """The whole dataset as one (N, C, size, size) uint8 tensor."""
    ds = open_dataset(path)
    n = len(ds)
    out = torch.empty((n, channels, size, size), dtype=torch.uint8)
    fixed = ds.manifest.image.height is not None
    with Progress(disable=not progress, transient=True) as bar:
        task = bar.add_task("decoding the dataset into memory", total=n)
        for a in range(0, n, chunk):
            idx = np.arange(a, min(n, a + chunk))
            imgs = ds.read_images(idx) if fixed else [ds[int(i)].image for i in idx]
            batch = np.stack([_fit(im, size, channels) for im in imgs])
            out[a : a + len(idx)] = torch.from_numpy(batch).permute(0, 3, 1, 2)
            bar.advance(task, len(idx))
    ds.close()
    return out


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The permutation of record indices for an epoch: a function of (seed, epoch) only."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def step_generator(seed: int, step: int, stream: int, rank: int = 0) -> torch.Generator:
    """A CPU generator for one step's random draws (noise, flips), independent of any device."""
    return torch.Generator().manual_seed(((seed * 7_919 + step) * 31 + stream) * 1_000 + rank)


class InMemoryBatches:
    """Batches gathered from a decoded uint8 tensor (on the GPU or in pinned host memory)."""

    def __init__(self, data: torch.Tensor, batch: int, seed: int, flip: bool, device: torch.device,
                 rank: int = 0, world: int = 1) -> None:
        self.n = data.shape[0]
        self.batch, self.seed, self.flip = batch, seed, flip
        self.device, self.rank, self.world = device, rank, world
        self.data = data
        if device.type == "cuda" and data.device.type == "cpu":
            try:  # the whole set on the GPU when there is room; else pinned for fast copies
                free, _ = torch.cuda.mem_get_info(device)
                self.data = data.to(device) if data.numel() < 0.4 * free else data.pin_memory()
            except RuntimeError:
                self.data = data.pin_memory()
        self.steps_per_epoch = max(1, self.n // batch)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        """uint8 batches of this rank, from batch `start` of the epoch."""
        order = epoch_order(self.n, self.seed, epoch)
        per_rank = self.batch // self.world
        for k in range(start, self.steps_per_epoch):
            idx = order[k * self.batch : (k + 1) * self.batch][self.rank * per_rank : (self.rank + 1) * per_rank]
            if self.data.device.type == "cuda":
                idx = idx.to(self.data.device)
            yield self.data.index_select(0, idx).to(self.device, non_blocking=True)


class _Records(Dataset):
    def __init__(self, path: str, size: int, channels: int) -> None:
        self.ds = open_dataset(path)
        self.size, self.channels = size, channels

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(_fit(self.ds[i].image, self.size, self.channels)).permute(2, 0, 1).contiguous()


class StreamedBatches:
    """Batches streamed from the shards by a DataLoader, in the same per-epoch order."""

    def __init__(self, path: str, size: int, channels: int, batch: int, seed: int, flip: bool,
                 device: torch.device, workers: int, rank: int = 0, world: int = 1) -> None:
        self.records = _Records(path, size, channels)
        self.n = len(self.records)
        self.batch, self.seed, self.flip, self.device = batch, seed, flip, device
        self.workers, self.rank, self.world = workers, rank, world
        self.steps_per_epoch = max(1, self.n // batch)

    def batches(self, epoch: int, start: int = 0) -> Iterator[torch.Tensor]:
        order = epoch_order(self.n, self.seed, epoch)
        per_rank = self.batch // self.world
        idx = [order[k * self.batch : (k + 1) * self.batch][self.rank * per_rank : (self.rank + 1) * per_rank]
               for k in range(start, self.steps_per_epoch)]
        # forkserver, not fork: a process that has run a Prefect flow has background threads whose
        # exit hooks make forked workers exit with status 1 (and fork with threads is unsafe anyway).
        loader = DataLoader(self.records, batch_sampler=[i.tolist() for i in idx], num_workers=self.workers,
                            pin_memory=self.device.type == "cuda", persistent_workers=False,
                            multiprocessing_context="forkserver" if self.workers else None)
        for b in loader:
            yield b.to(self.device, non_blocking=True)


def to_model_input(batch: torch.Tensor, flip: bool, generator: torch.Generator, channels_last: bool) -> torch.Tensor:
    """uint8 NCHW -> float in [-1, 1], with a random horizontal flip per image."""
    x = batch.float().div_(127.5).sub_(1.0)
    if flip:
        mask = torch.rand(x.shape[0], generator=generator) < 0.5
        mask = mask.to(x.device)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def reference_images(path: str, size: int, channels: int, n: int, seed: int = 0) -> np.ndarray:
    """`n` random records (all when fewer) as the model sees them: uint8 NHWC, three channels."""
    ds = open_dataset(path)
    try:
        pick = np.sort(np.random.default_rng(seed).permutation(len(ds))[:n])
        images = np.stack([_fit(ds[int(i)].image, size, channels) for i in pick])
    finally:
        ds.close()
    return np.repeat(images, 3, axis=3) if images.shape[3] == 1 else images
