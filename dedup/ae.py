"""The paper's own hash, as an option (`method="ae"`).

Radford et al. trained "a 3072-128-3072 de-noising dropout regularized RELU autoencoder on
32x32 downsampled center-crops of training examples" and binarised the code layer "via
thresholding the ReLU activation", a semantic hash. Here: the same network trained with torch
on the dataset itself (a sample of it when large), then every record's code layer, thresholded
at zero, packed into uint64 words for the same Hamming search as the perceptual hashes.

What it learns to ignore is what it is trained to undo: with `edits` (the default) each input is
an edited copy of its target, the edits a near-duplicate carries (a small rotation, shift and
crop, a caption bar, gamma, saturation and brightness, then pixel noise), so the code of an edited
picture should stay near the original's; without, only Gaussian pixel noise, as before.
bench/dedup_quality.py compares both with the perceptual hashes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from shards import open_dataset

from .hashing import CORRUPT, Hashes, centre_crop, hash_bytes


class DenoisingAutoencoder(nn.Module):
    """3072-128-3072 with a ReLU code. Inputs are standardised per pixel (the statistics are part
    of the model): on raw [0, 1] pixels the decoder's bias alone learns the mean image and the code
    units die, which makes every hash the same."""

    def __init__(self, bits: int = 128, dropout: float = 0.2) -> None:
        super().__init__()
        self.encoder = nn.Linear(3072, bits)
        self.dropout = nn.Dropout(dropout)
        self.decoder = nn.Linear(bits, 3072)
        self.register_buffer("mean", torch.zeros(3072))
        self.register_buffer("std", torch.ones(3072))

    def standardise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def code(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.encoder(self.standardise(x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.dropout(self.code(x)))


@dataclass
class AeTrainingReport:
    samples: int
    epochs: int
    final_loss: float


def edit_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Near-duplicate edits of a batch of (B, 3072) pixels in [0, 1] (32x32 RGB, HWC order):
    rotation up to 4 degrees, scale 0.9-1.15, shift up to 4 %, a dark bar over the bottom 1/8 of
    a quarter of them, gamma 0.6-1.6, saturation 0.4-1.6, brightness +-10 %."""
    b = len(x)
    img = x.view(b, 32, 32, 3).permute(0, 3, 1, 2)

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    angle, scale = torch.deg2rad(uniform(-4, 4)), uniform(0.9, 1.15)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, uniform(-0.08, 0.08)], 1),
                         torch.stack([sin, cos, uniform(-0.08, 0.08)], 1)], 1)
    grid = nn.functional.affine_grid(theta, list(img.shape), align_corners=False)
    img = nn.functional.grid_sample(img, grid, padding_mode="reflection", align_corners=False)
    bar = torch.rand(b, generator=gen) < 0.25
    img[bar, :, 28:, :] = 0.08
    img = img.clamp(0, 1) ** uniform(0.6, 1.6).view(b, 1, 1, 1)
    grey = img.mean(1, keepdim=True)
    img = grey + (img - grey) * uniform(0.4, 1.6).view(b, 1, 1, 1)
    img = (img * uniform(0.9, 1.1).view(b, 1, 1, 1)).clamp(0, 1)
    return img.permute(0, 2, 3, 1).reshape(b, -1)


def train_autoencoder(crops: np.ndarray, bits: int = 128, epochs: int = 30, seed: int = 0, noise: float = 0.1,
                      batch: int = 128, edits: bool = True) -> tuple[DenoisingAutoencoder, AeTrainingReport]:
    """Train on (N, 32, 32, 3) uint8 crops: the input an edited (`edits`) and noisy copy of the
    target (the denoising), dropout on the code, mean squared error on standardised pixels."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(crops.reshape(len(crops), -1)).float() / 255.0
    model = DenoisingAutoencoder(bits)
    if len(x):
        model.mean.copy_(x.mean(0))
        model.std.copy_(x.std(0).clamp_min(1e-3) if len(x) > 1 else torch.ones(3072))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss = torch.tensor(0.0)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        for k in range(0, len(x), batch):
            xb = x[perm[k : k + batch]]
            noisy = (edit_batch(xb, gen) if edits else xb) + noise * torch.randn(xb.shape, generator=gen)
            loss = nn.functional.mse_loss(model(noisy), model.standardise(xb))
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    return model, AeTrainingReport(len(x), epochs, float(loss.detach()))


@torch.no_grad()
def ae_codes(model: DenoisingAutoencoder, crops: np.ndarray) -> np.ndarray:
    """Code layer > 0, packed: (N, bits/64) uint64."""
    x = torch.from_numpy(crops.reshape(len(crops), -1)).float() / 255.0
    bits = (model.code(x) > 0).numpy()
    return np.packbits(bits, axis=1).view(">u8").astype(np.uint64)


def ae_hash_images(dataset: str | os.PathLike[str], bits: int = 128, epochs: int = 30, seed: int = 0,
                   max_train: int = 100_000, edits: bool = True) -> Hashes:
    """Train on (a sample of) the dataset, then hash every record with the code layer."""
    ds = open_dataset(dataset)
    n = len(ds)
    crops = np.zeros((n, 32, 32, 3), np.uint8) if n <= 4 * max_train else None
    rng = np.random.default_rng(seed)
    train_idx = np.sort(rng.choice(n, min(n, max_train), replace=False)) if n else np.zeros(0, int)
    pixels = np.zeros(n, np.int64)
    status = np.zeros(n, np.int8)
    sha_b = np.zeros(n, "S16")
    sha_p = np.zeros(n, "S16")
    train = []
    wanted = set(train_idx.tolist())
    for i, data, _ in ds.iter_encoded():
        _, pixels[i], sha_b[i], sha_p[i], error = hash_bytes(data, "ahash")
        crop = centre_crop(data) if not error else None
        if crop is None:
            status[i] = CORRUPT
            continue
        if crops is not None:
            crops[i] = crop
        if i in wanted:
            train.append(crop)
    model, _ = train_autoencoder(np.stack(train) if train else np.zeros((0, 32, 32, 3), np.uint8), bits, epochs, seed,
                                 edits=edits)
    codes = np.zeros((n, bits // 64), np.uint64)
    if crops is not None:
        for a in range(0, n, 8192):
            codes[a : a + 8192] = ae_codes(model, crops[a : a + 8192])
    else:  # too many to hold: a second streaming pass
        buf, idx = [], []
        for i, data, _ in ds.iter_encoded():
            crop = centre_crop(data)
            if crop is not None:
                buf.append(crop)
                idx.append(i)
            if len(buf) == 8192:
                codes[idx] = ae_codes(model, np.stack(buf))
                buf, idx = [], []
        if buf:
            codes[idx] = ae_codes(model, np.stack(buf))
    codes[status == CORRUPT] = 0
    ds.close()
    return Hashes(codes, pixels, status, sha_b, sha_p, "ae")
