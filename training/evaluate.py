"""Evaluation: the paper's representation test, its k-means baseline, and FID where possible.

Representation test (the paper, section 5.1): D's convolutional features from all layers, each
max-pooled to a 4x4 grid, flattened and concatenated, then a regularised linear L2-SVM. Here on
Fashion-MNIST (Debian's `dataset-fashion-mnist`), with a DCGAN trained on that dataset, against
single-layer k-means features (Coates and Ng, 2011): normalised and ZCA-whitened 6x6 patches,
k-means centroids, the "triangle" activation, sum-pooled over the four quadrants.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.cluster import MiniBatchKMeans
from sklearn.preprocessing import StandardScaler

from wikifaces.core.errors import MissingInput
from wikifaces.core.version import code_version

from .models import Discriminator

FASHION = Path("/usr/share/datasets/fashion-mnist")
INCEPTION_WEIGHTS = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints" / (
    "weights-inception-2015-12-05-6726825d.pth")


def load_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """An IDX file (MNIST's format), gzipped or not."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        raise ValueError(f"{path} is not an IDX file of unsigned bytes")
    shape = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load_fashion_mnist(split: str = "train", root: Path = FASHION) -> tuple[np.ndarray, np.ndarray]:
    prefix = {"train": "train", "test": "t10k"}[split]
    images, labels = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
    if not images.exists():
        raise MissingInput(f"{images} is missing: install Debian's dataset-fashion-mnist (make sysdeps)")
    return load_idx(images), load_idx(labels)


@torch.no_grad()
def dcgan_features(d: Discriminator, images: torch.Tensor, batch: int = 512) -> np.ndarray:
    """Every block's activations max-pooled to 4x4, flattened and concatenated. `images` are
    float NCHW in [-1, 1]."""
    d.eval()
    out = []
    for a in range(0, len(images), batch):
        maps = d.feature_maps(images[a : a + batch])
        out.append(torch.cat([torch.nn.functional.adaptive_max_pool2d(m, 4).flatten(1) for m in maps], 1))
    return torch.cat(out).numpy()


def _patches(images: np.ndarray, size: int, stride: int) -> np.ndarray:
    """All size x size patches of (N, H, W) images: (N, P, size*size) float32."""
    n = images.shape[0]
    view = np.lib.stride_tricks.sliding_window_view(images, (size, size), axis=(1, 2))[:, ::stride, ::stride]
    return view.reshape(n, -1, size * size).astype(np.float32)


def _normalise(p: np.ndarray) -> np.ndarray:
    p = p - p.mean(-1, keepdims=True)
    return p / np.sqrt(p.var(-1, keepdims=True) + 10.0)


@dataclass
class KMeansFeatures:
    """Coates and Ng's single-layer network: k-means on whitened patches, triangle activation."""

    centroids: np.ndarray
    mean: np.ndarray
    whiten: np.ndarray
    size: int = 6

    @classmethod
    def fit(cls, images: np.ndarray, k: int = 400, size: int = 6, patches: int = 100_000, seed: int = 0
            ) -> KMeansFeatures:
        rng = np.random.default_rng(seed)
        n, h, w = images.shape
        i = rng.integers(0, n, patches)
        y, x = rng.integers(0, h - size + 1, patches), rng.integers(0, w - size + 1, patches)
        p = np.stack([images[a, b : b + size, c : c + size] for a, b, c in zip(i, y, x, strict=True)])
        p = p.reshape(patches, -1)
        p = _normalise(p.astype(np.float32))
        mean = p.mean(0)
        cov = np.cov(p - mean, rowvar=False)
        evals, evecs = np.linalg.eigh(cov)
        whiten = evecs @ np.diag(1.0 / np.sqrt(evals + 0.1)) @ evecs.T
        km = MiniBatchKMeans(k, random_state=seed, batch_size=4096, n_init=3).fit((p - mean) @ whiten)
        return cls(km.cluster_centers_.astype(np.float32), mean.astype(np.float32), whiten.astype(np.float32), size)

    def transform(self, images: np.ndarray, batch: int = 64) -> np.ndarray:
        n, h = images.shape[:2]
        side = h - self.size + 1
        out = []
        c2 = (self.centroids**2).sum(1)
        for a in range(0, n, batch):
            p = _normalise(_patches(images[a : a + batch], self.size, 1))
            b = p.shape[0]
            p = (p.reshape(-1, p.shape[-1]) - self.mean) @ self.whiten  # one BLAS call for the whole batch
            d = (p * p).sum(1, keepdims=True) - 2 * (p @ self.centroids.T) + c2
            np.sqrt(np.maximum(d, 0, out=d), out=d)
            act = np.maximum(d.mean(1, keepdims=True) - d, 0)  # the triangle activation
            act = act.reshape(b, side, side, -1)
            m = side // 2
            quads = [act[:, :m, :m], act[:, :m, m:], act[:, m:, :m], act[:, m:, m:]]
            out.append(np.concatenate([q.sum((1, 2)) for q in quads], 1))
        return np.concatenate(out)


def fit_l2svm(x: np.ndarray, y: np.ndarray, c: float, iterations: int = 100) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear L2-SVM, one-vs-rest: minimises 0.5 |W|^2 + C sum max(0, 1 - y (xW + b))^2 (the squared
    hinge, LinearSVC's primal) for all classes at once with L-BFGS. liblinear took 65-370 s a fit on
    4,000 x 3,584 features here (bench notes); this takes a few seconds, at the same accuracy."""
    xt = torch.from_numpy(np.ascontiguousarray(x, np.float32))
    k = int(y.max()) + 1
    target = -torch.ones(len(y), k)
    target[torch.arange(len(y)), torch.from_numpy(y.astype(np.int64))] = 1
    w = torch.zeros(x.shape[1], k, requires_grad=True)
    b = torch.zeros(k, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iterations, history_size=20, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-5, tolerance_change=1e-9)

    def objective() -> torch.Tensor:
        opt.zero_grad()
        margin = torch.clamp(1 - target * (xt @ w + b), min=0)
        loss = 0.5 * (w * w).sum() + c * (margin * margin).sum()
        loss.backward()
        return loss

    opt.step(objective)
    return w.detach(), b.detach()


def svm_accuracy(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, test_y: np.ndarray,
                 c: float = 0.01) -> float:
    """A regularised linear L2-SVM (squared hinge loss) on standardised features: test accuracy."""
    scaler = StandardScaler().fit(train_x)
    w, b = fit_l2svm(scaler.transform(train_x), train_y, c)
    scores = torch.from_numpy(scaler.transform(test_x).astype(np.float32)) @ w + b
    return float((scores.argmax(1).numpy() == test_y).mean())


def choose_c(x: np.ndarray, y: np.ndarray, grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1), folds: int = 3,
             limit: int = 10_000, seed: int = 0) -> float:
    """The SVM's C by stratified k-fold cross-validation on the labelled training images alone
    (at most `limit` of them: C is chosen on a subset when every label is used)."""
    from sklearn.model_selection import StratifiedKFold

    if len(x) > limit:
        pick = np.random.default_rng(seed).choice(len(x), limit, replace=False)
        x, y = x[pick], y[pick]
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    scores = [np.mean([svm_accuracy(x[a], y[a], x[b], y[b], c) for a, b in splits]) for c in grid]
    return grid[int(np.argmax(scores))]


def fid(real_dir: str | os.PathLike[str], fake_dir: str | os.PathLike[str]) -> float:
    """FID between two folders of images, with torch-fidelity and Inception-v3 weights that must
    already be on disk: they are never downloaded at run time."""
    if not INCEPTION_WEIGHTS.exists():
        raise MissingInput(
            f"FID needs the Inception-v3 weights file {INCEPTION_WEIGHTS} (torch-fidelity's "
            "weights-inception-2015-12-05-6726825d.pth); it is not present and is never downloaded. "
            "Copy it there (and pip install torch-fidelity) to compute FID."
        )
    try:
        import torch_fidelity
    except ImportError as exc:
        raise ImportError("FID needs torch-fidelity (pip install torch-fidelity); the weights are present") from exc
    metrics = torch_fidelity.calculate_metrics(
        input1=str(real_dir), input2=str(fake_dir), fid=True, verbose=False,
        feature_extractor_weights_path=str(INCEPTION_WEIGHTS),
    )
    return float(metrics["frechet_inception_distance"])


def write_fashion_shards(out: str | os.PathLike[str], split: str = "train", limit: int | None = None) -> int:
    """Fashion-MNIST as a shard dataset: 28x28 images padded to 32x32 (the background is black),
    stored as RGB PNG with the label in each record's metadata."""
    from shards import ShardWriter, is_complete

    if is_complete(out):
        from shards import open_dataset

        return len(open_dataset(out))
    images, labels = load_fashion_mnist(split)
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    with ShardWriter(out, name=f"fashion-mnist-{split}", image_size=(32, 32), encoding="png", mode="overwrite",
                     parameters={"split": split, "limit": limit, "padding": 2}, code_version=code_version()) as w:
        for i, (img, label) in enumerate(zip(images, labels, strict=True)):
            padded = np.pad(img, 2)
            w.add(np.repeat(padded[:, :, None], 3, axis=2), {"key": f"{split}-{i:05d}", "label": int(label)})
    return len(images)


@dataclass
class Regime:
    """One label budget: test accuracy per feature set over `draws` random draws of labelled images."""

    name: str
    labels: int  # labelled training images per draw
    accuracy: dict[str, list[float]]  # feature set -> one accuracy per draw
    c: dict[str, list[float]]  # the C cross-validation chose, per draw

    def mean(self, features: str) -> float:
        return float(np.mean(self.accuracy[features]))

    def std(self, features: str) -> float:
        return float(np.std(self.accuracy[features]))


@dataclass
class RepresentationResult:
    test_images: int
    dcgan_features: int
    kmeans_features: int
    run_dir: str
    regimes: list[Regime]


def draw_per_class(y: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of `per_class` random images of every class (sorted)."""
    picks = [rng.choice(np.flatnonzero(y == k), per_class, replace=False) for k in np.unique(y)]
    return np.sort(np.concatenate(picks))


def representation_test(work: str | os.PathLike[str], per_class: tuple[int | None, ...] = (400, None),
                        draws: int = 10, test: int | None = None, train_images: int | None = None, epochs: int = 3,
                        width: int = 256, kmeans_k: int = 400, seed: int = 0, progress: bool = True,
                        batch_size: int = 128, c_grid: tuple[float, ...] = (1e-3, 1e-2, 1e-1)
                        ) -> RepresentationResult:
    """The paper's Table 1 protocol on Fashion-MNIST: train DCGAN on the (unlabelled) training
    images, then, for each label budget (`per_class` images of every class, `draws` random draws;
    None: every training label, one draw), fit a linear L2-SVM, C chosen by cross-validation on
    the labelled images only (of the regime's first draw), on D's features, single-layer k-means
    features and raw pixels; report test accuracy per draw. D and k-means see the same unlabelled images."""
    from .config import TrainConfig
    from .train import load_checkpoint, train_dcgan

    work = Path(work)
    shards_dir = work / "fashion-train"
    write_fashion_shards(shards_dir, "train", train_images)
    config = TrainConfig(dataset=shards_dir, image_size=32, channels=1, g_width=width, d_width=width,
                         epochs=epochs, batch_size=batch_size, seed=seed, runs_dir=work / "runs",
                         desc="fashion-dcgan", sample_every=1000, checkpoint_every=2000, augment="none")
    summary = train_dcgan(config, progress=progress)
    ckpt = load_checkpoint(summary.run_dir / "checkpoints" / "latest.pt")
    d = Discriminator(32, width, 1, config.kernel)
    d.load_state_dict(ckpt["discriminator"])

    tr_x, tr_y = load_fashion_mnist("train")
    te_x, te_y = load_fashion_mnist("test")
    if train_images is not None:
        tr_x, tr_y = tr_x[:train_images], tr_y[:train_images]
    if test is not None:
        te_x, te_y = te_x[:test], te_y[:test]

    def as_input(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.pad(x, ((0, 0), (2, 2), (2, 2)))).float().div(127.5).sub(1)[:, None]

    km = KMeansFeatures.fit(tr_x.astype(np.float32), k=kmeans_k, seed=seed)
    features = {
        "dcgan": (dcgan_features(d, as_input(tr_x)), dcgan_features(d, as_input(te_x))),
        "kmeans": (km.transform(tr_x.astype(np.float32)), km.transform(te_x.astype(np.float32))),
        "pixels": (tr_x.reshape(len(tr_x), -1).astype(np.float32), te_x.reshape(len(te_x), -1).astype(np.float32)),
    }
    rng = np.random.default_rng(seed)
    regimes = []
    for k in per_class:
        runs = draws if k is not None else 1
        name = f"{k} per class" if k is not None else "all labels"
        regime = Regime(name, 0, {f: [] for f in features}, {f: [] for f in features})
        chosen: dict[str, float] = {}
        for draw in range(runs):
            pick = draw_per_class(tr_y, k, rng) if k is not None else np.arange(len(tr_y))
            regime.labels = len(pick)
            for f, (f_tr, f_te) in features.items():
                if f not in chosen:  # cross-validated on the first draw's labels, kept for the regime's draws
                    chosen[f] = choose_c(f_tr[pick], tr_y[pick], c_grid, seed=seed + draw)
                c = chosen[f]
                regime.c[f].append(c)
                regime.accuracy[f].append(svm_accuracy(f_tr[pick], tr_y[pick], f_te, te_y, c))
        regimes.append(regime)
    return RepresentationResult(len(te_x), features["dcgan"][0].shape[1], features["kmeans"][0].shape[1],
                                str(summary.run_dir), regimes)
