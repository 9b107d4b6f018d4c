"""Real photographs that ship inside installed packages.

Nothing can be downloaded at run time, so the demo, the offline Wikipedia stand-in and the
tests draw their pictures from files that pip (and, where noted, Debian) installed. Each
entry records where the file comes from and its licence, as its package states it.
"""

from __future__ import annotations

import importlib.util
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class SamplePhoto:
    id: str
    package: str  # importable package (or "debian:<package>" for files under /usr)
    relpath: str  # inside the package, or an absolute path for Debian files
    licence: str
    credit: str
    faces: int  # faces a person would count; 0 for photographs without people

    def path(self) -> Path | None:
        """Where the file is on this machine, or None if its package is not installed."""
        if self.package.startswith("debian:"):
            p = Path(self.relpath)
            return p if p.is_file() else None
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        p = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        return p if p.is_file() else None


PHOTOS: tuple[SamplePhoto, ...] = (
    SamplePhoto("grace-hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
                "Public domain (US Navy photograph)", "US Navy, via matplotlib sample data", 1),
    SamplePhoto("astronaut", "skimage", "data/astronaut.png",
                "Public domain (NASA)", "NASA, Eileen Collins; via scikit-image", 1),
    SamplePhoto("camera", "skimage", "data/camera.png",
                "CC0", "Lav Varshney; via scikit-image", 1),
    SamplePhoto("chelsea", "skimage", "data/chelsea.png", "CC0", "Stefan van der Walt; via scikit-image", 0),
    SamplePhoto("coffee", "skimage", "data/coffee.png", "CC0", "Rachel Michetti; via scikit-image", 0),
    SamplePhoto("rocket", "skimage", "data/rocket.jpg", "Public domain (SpaceX)", "SpaceX; via scikit-image", 0),
    SamplePhoto("retina", "skimage", "data/retina.jpg", "CC0", "Mikael Häggström; via scikit-image", 0),
    SamplePhoto("hubble", "skimage", "data/hubble_deep_field.jpg", "Public domain (NASA)",
                "NASA; via scikit-image", 0),
    SamplePhoto("brick", "skimage", "data/brick.png", "CC0", "CC0Textures; via scikit-image", 0),
    SamplePhoto("china", "sklearn", "datasets/images/china.jpg", "CC BY 2.0",
                "danielbuechele (Flickr); via scikit-learn", 0),
    SamplePhoto("flower", "sklearn", "datasets/images/flower.jpg", "CC BY 2.0",
                "vultilion (Flickr); via scikit-learn", 0),
)


def available_photos(faces: bool | None = None) -> list[tuple[SamplePhoto, Path]]:
    """The registered photographs present here; `faces` True/False keeps only those with/without."""
    out = []
    for photo in PHOTOS:
        if faces is not None and (photo.faces > 0) != faces:
            continue
        path = photo.path()
        if path is not None:
            out.append((photo, path))
    return out


def load_rgb(path: str | Path) -> np.ndarray:
    """An RGB uint8 HxWx3 array (grey images are expanded to three channels)."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"cannot read image {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def random_crops(
    size: int = 64, per_photo: int = 24, seed: int = 0, faces: bool | None = None
) -> Iterator[tuple[np.ndarray, dict]]:
    """Random square crops of the packaged photographs, resized to `size`, with metadata.

    Deterministic for a seed: a small real-image dataset for demos, tests and benchmarks.
    """
    rng = random.Random(seed)
    for photo, path in available_photos(faces):
        img = load_rgb(path)
        h, w = img.shape[:2]
        for k in range(per_photo):
            side = rng.randint(min(h, w) // 4, min(h, w))
            y, x = rng.randint(0, h - side), rng.randint(0, w - side)
            crop = cv2.resize(img[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
            yield np.ascontiguousarray(crop), {
                "key": f"{photo.id}-{k:03d}", "source": photo.id, "licence": photo.licence,
                "credit": photo.credit, "box": [x, y, side, side],
            }
