"""Looking at a trained generator: samples, latent walks (the paper's Figure 4), vector
arithmetic on z (Figure 7) and a memorisation check against the training set."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from shards.sheet import contact_sheet, write_png
from wikifaces.core.errors import BadConfig, MissingInput

from .config import TrainConfig
from .data import load_tensor
from .models import Generator, build_models, sample_z
from .train import CHECKPOINT, generate, load_checkpoint


def load_generator(run: str | os.PathLike[str]) -> tuple[Generator, TrainConfig, dict]:
    """The generator of a run directory (its latest checkpoint) or of a checkpoint file."""
    p = Path(run)
    path = p / "checkpoints" / CHECKPOINT if p.is_dir() else p
    if not path.exists():
        raise MissingInput(f"no checkpoint at {path}")
    ckpt = load_checkpoint(path)
    config = TrainConfig.model_validate(ckpt["config"])
    g, _ = build_models(config.image_size, config.z_dim, config.g_width, config.d_width, config.channels,
                        config.kernel)
    g.load_state_dict(ckpt["generator"])
    return g, config, ckpt


def numbered_grid(images: np.ndarray, cols: int | None = None, cell: int = 96, start: int = 0) -> np.ndarray:
    """A contact sheet with each cell's index written in its corner (to pick samples by number)."""
    cols = cols or math.ceil(math.sqrt(len(images)))
    sheet = contact_sheet(list(images), cols=cols, cell=cell)
    for k in range(len(images)):
        r, c = divmod(k, cols)
        x, y = 2 + c * (cell + 2) + 3, 2 + r * (cell + 2) + 14
        cv2.putText(sheet, str(start + k), (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 0), 1, cv2.LINE_AA)
    return sheet


def generate_grid(run: str | os.PathLike[str], out: str | os.PathLike[str], n: int = 64, seed: int = 0,
                  numbered: bool = True) -> np.ndarray:
    """n samples for z drawn with `seed`; numbered cells can be named in `arithmetic`."""
    g, config, _ = load_generator(run)
    z = sample_z(n, config.z_dim, torch.Generator().manual_seed(seed))
    images = generate(g, z)
    write_png(out, numbered_grid(images) if numbered else contact_sheet(list(images)))
    return images


def interpolate(run: str | os.PathLike[str], out: str | os.PathLike[str], rows: int = 8, steps: int = 10,
                seed: int = 0) -> np.ndarray:
    """Each row walks in a straight line through z from one random point to another."""
    g, config, _ = load_generator(run)
    gen = torch.Generator().manual_seed(seed)
    a, b = sample_z(rows, config.z_dim, gen), sample_z(rows, config.z_dim, gen)
    t = torch.linspace(0, 1, steps)
    z = (a[:, None] * (1 - t[None, :, None]) + b[:, None] * t[None, :, None]).reshape(rows * steps, -1)
    images = generate(g, z)
    write_png(out, contact_sheet(list(images), cols=steps, cell=max(64, config.image_size)))
    return images


def arithmetic(run: str | os.PathLike[str], out: str | os.PathLike[str], a: list[int], b: list[int], c: list[int],
               seed: int = 0, n: int = 64, variations: int = 8, noise: float = 0.25) -> np.ndarray:
    """mean z(A) - mean z(B) + mean z(C), then images of that vector and of it with uniform noise
    of +-noise added (as in the paper). A, B and C are sample numbers of `generate_grid(seed=seed)`."""
    g, config, _ = load_generator(run)
    z = sample_z(n, config.z_dim, torch.Generator().manual_seed(seed))
    for name, group in (("A", a), ("B", b), ("C", c)):
        if not group or any(not 0 <= i < n for i in group):
            raise BadConfig(f"group {name} must name samples 0..{n - 1} of the grid for seed {seed}: {group}")
    means = [z[group].mean(0) for group in (a, b, c)]
    result = means[0] - means[1] + means[2]
    jitter = (torch.rand(variations - 1, config.z_dim, generator=torch.Generator().manual_seed(seed + 1)) * 2 - 1)
    zs = torch.cat([torch.stack(means), result[None], result[None] + noise * jitter])
    images = generate(g, zs)
    # row 1: mean of A, mean of B, mean of C, result; row 2: the result's neighbourhood
    write_png(out, contact_sheet(list(images[:4]) + [np.full_like(images[0], 255)] * (max(4, variations) - 4)
                                 + list(images[4:]), cols=max(4, variations), cell=max(64, config.image_size)))
    return images


def memorisation(run: str | os.PathLike[str], dataset: str | os.PathLike[str], out: str | os.PathLike[str],
                 n: int = 16, seed: int = 0, neighbours: int = 3) -> list[list[float]]:
    """For n samples, the nearest training images (Euclidean distance in pixels per pixel, 0-255),
    drawn as rows: sample, then its nearest neighbours. Small distances mean copying."""
    g, config, _ = load_generator(run)
    samples = generate(g, sample_z(n, config.z_dim, torch.Generator().manual_seed(seed)))
    train = load_tensor(str(dataset), config.image_size, config.channels, progress=False)  # N C H W uint8
    if config.channels == 1:
        train = train.repeat(1, 3, 1, 1)
    flat = train.flatten(1).float()
    s = torch.from_numpy(samples).permute(0, 3, 1, 2).flatten(1).float()
    best = torch.full((n, neighbours), float("inf"))
    best_idx = torch.zeros((n, neighbours), dtype=torch.long)
    for a in range(0, len(flat), 4096):
        d = torch.cdist(s, flat[a : a + 4096])
        d_all = torch.cat([best, d], 1)
        idx_all = torch.cat([best_idx, torch.arange(a, a + d.shape[1]).expand(n, -1)], 1)
        best, order = d_all.topk(neighbours, largest=False)
        best_idx = idx_all.gather(1, order)
    per_pixel = best / math.sqrt(s.shape[1])
    tiles = []
    for i in range(n):
        tiles.append(samples[i])
        tiles.extend(train[j].permute(1, 2, 0).numpy() for j in best_idx[i].tolist())
    sheet = contact_sheet(tiles, cols=neighbours + 1, cell=max(64, config.image_size))
    cell = max(64, config.image_size)
    for i in range(n):
        for k in range(neighbours):
            x, y = 2 + (k + 1) * (cell + 2) + 3, 2 + i * (cell + 2) + cell - 4
            cv2.putText(sheet, f"{per_pixel[i, k]:.1f}", (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 0), 1,
                        cv2.LINE_AA)
    write_png(out, sheet)
    return per_pixel.tolist()
