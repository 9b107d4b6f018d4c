"""Sample quality without downloads: what a run's samples are, measured against its training images.

FID needs Inception weights that no registry package ships, so a run is judged in the space of a
model that does ship (for faces, dlib's 128-d face descriptor, supplied by the `faces` package
through a `Judge`; training knows nothing of faces):

* face rate: the share of samples in which the judge's detector and verification find a face,
  beside the same rate on real training images (the ceiling);
* Fréchet distance between Gaussians fitted to sample and real descriptors (FID's formula in
  another space: its numbers are NOT comparable with published FIDs, hence the names
  `fd_<space>`);
* precision and recall (Kynkäänniemi et al., 2019): the share of samples inside the real
  images' k-NN manifold, and of real images inside the samples'.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch


class Judge(Protocol):
    """What the metrics need from a model outside training."""

    space: str  # short name of the descriptor space, used in metric names: "dlib128"
    description: str  # the model and its version, recorded with the metrics

    def describe(self, images: np.ndarray) -> np.ndarray:
        """(N, D) float descriptors of uint8 NHWC RGB images."""
        ...

    def face_rate(self, images: np.ndarray) -> float | None:
        """The share of images holding a verified face; None when the judge has no face test."""
        ...


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to two feature sets."""
    from scipy import linalg

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    root = linalg.sqrtm(s_a @ s_b)
    if not np.isfinite(root).all():  # near-singular product: regularise both, as pytorch-fid does
        eps = np.eye(len(s_a)) * 1e-6
        root = linalg.sqrtm((s_a + eps) @ (s_b + eps))
    root = np.real(root)
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(s_a) + np.trace(s_b) - 2 * np.trace(root))


def _knn_radius(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)
    return d.kthvalue(k + 1, dim=1).values  # the 0th neighbour is the point itself


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al., 2019) with k-NN manifolds."""
    r, f = torch.from_numpy(np.asarray(real, np.float32)), torch.from_numpy(np.asarray(fake, np.float32))
    k = max(1, min(k, len(r) - 1, len(f) - 1))
    r_rad, f_rad = _knn_radius(r, k), _knn_radius(f, k)
    cross = torch.cdist(f, r)  # fake x real
    precision = (cross <= r_rad[None, :]).any(1).float().mean()
    recall = (cross <= f_rad[:, None]).any(0).float().mean()
    return float(precision), float(recall)


def sample_quality(judge: Judge, samples: np.ndarray, real: np.ndarray,
                   real_cache: dict[str, object] | None = None, k: int = 3) -> dict[str, float | str]:
    """Every metric of samples against real images (uint8 NHWC RGB). `real_cache` keeps the
    real images' descriptors and face rate between calls."""
    cache = real_cache if real_cache is not None else {}
    if "features" not in cache:
        cache["features"] = judge.describe(real)
        cache["face_rate"] = judge.face_rate(real)
    real_f = cache["features"]
    fake_f = judge.describe(samples)
    precision, recall = precision_recall(real_f, fake_f, k)  # type: ignore[arg-type]
    out: dict[str, float | str] = {
        f"fd_{judge.space}": round(frechet_distance(real_f, fake_f), 4),  # type: ignore[arg-type]
        f"precision_{judge.space}": round(precision, 4), f"recall_{judge.space}": round(recall, 4),
        "samples": len(samples), "real_images": len(real), "space": judge.description,
    }
    rate = judge.face_rate(samples)
    if rate is not None:
        out["face_rate"] = round(rate, 4)
        out["face_rate_real"] = round(float(cache["face_rate"]), 4)  # type: ignore[arg-type]
    return out
