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
