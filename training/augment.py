"""DiffAugment (Zhao, Liu, Lin, Zhu and Han, 2020): differentiable augmentation for GANs on little data.

The same random transformation family T is applied to every image D sees, real or generated, in
both D's and G's updates: D(T(x)), D(T(G(z))). Because T is differentiable, G's gradient flows
through it, so G learns the un-augmented distribution while D cannot memorise the few real
images it has. The policies, as the paper defines them:

* `color`: brightness (add U[-0.5, 0.5]), saturation (scale the deviation from the per-pixel
  channel mean by U[0, 2]), contrast (scale the deviation from the image mean by U[0.5, 1.5]);
* `translation`: shift by up to 1/8 of the image side in each direction, zero padding;
* `cutout`: zero one square of half the image side at a random place (it may cross the border).

Images are float NCHW in [-1, 1]; every draw comes from the generator given, so a run's
augmentations are reproducible and survive an exact resume.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from .config import POLICIES, parse_policy

__all__ = ["POLICIES", "diff_augment", "parse_policy"]


def _uniform(n: int, generator: torch.Generator, like: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    u = torch.rand(n, 1, 1, 1, generator=generator)
    return (lo + (hi - lo) * u).to(device=like.device, dtype=like.dtype)


def color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    x = x + _uniform(n, generator, x, -0.5, 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _uniform(n, generator, x, 0.0, 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _uniform(n, generator, x, 0.5, 1.5) + mean


def translation(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by whole pixels (up to `ratio` of its side), filling with zeros."""
    n, _, h, w = x.shape
    sy, sx = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), generator=generator).to(x.device)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), generator=generator).to(x.device)
    rows = torch.arange(h, device=x.device).view(1, h, 1) + dy + 1  # +1: index into a 1-pixel zero border
    cols = torch.arange(w, device=x.device).view(1, 1, w) + dx + 1
    rows, cols = rows.clamp(0, h + 1).expand(n, h, w), cols.clamp(0, w + 1).expand(n, h, w)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    batch = torch.arange(n, device=x.device).view(n, 1, 1).expand(n, h, w)
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2).contiguous(memory_format=_fmt(x))


def cutout(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero a square of `ratio` of the side, centred anywhere in the image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), generator=generator).to(x.device)
    ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), generator=generator).to(x.device)
    y0, x0 = oy - ch // 2, ox - cw // 2  # top-left corner; the square may cross the border
    rows = torch.arange(h, device=x.device).view(1, h, 1)
    cols = torch.arange(w, device=x.device).view(1, 1, w)
    inside = (rows >= y0) & (rows < y0 + ch) & (cols >= x0) & (cols < x0 + cw)
    return x * (~inside).unsqueeze(1).to(x.dtype)


def _fmt(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        and not x.is_contiguous() else torch.contiguous_format


OPS: dict[str, Callable[[torch.Tensor, torch.Generator], torch.Tensor]] = {
    "color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], generator: torch.Generator) -> torch.Tensor:
    """T(x): the policy's transformations in order, each with fresh random parameters per image."""
    for name in policy:
        x = OPS[name](x, generator)
    return x
