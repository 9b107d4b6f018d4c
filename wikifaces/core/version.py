"""The code's identity: the package version and, in a checkout, the git commit.

Recorded in every manifest and receipt so that a dataset says which code built it.
"""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path

try:
    __version__ = metadata.version("wikifaces")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


@functools.cache
def code_version() -> str:
    """The package version plus the git commit (and `-dirty`) when run from a checkout.

    Recorded in every manifest and receipt so that a dataset says which code built it.
    """
    repo = Path(__file__).resolve().parents[2]
    if not (repo / ".git").exists():
        return __version__
    try:
        sha = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short=12", "HEAD"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return __version__
    return f"{__version__}+g{sha}{'.dirty' if dirty else ''}"


PACKAGES = ("wikifaces", "scraping", "faces", "dedup", "shards", "training", "flows")


@functools.cache
def code_fingerprint() -> str:
    """A hash of the Python source of our packages: what keys per-item journals, so that results
    made by other code are never mixed in, while a change to the README or a commit that leaves
    the code as it was does not void them (as `code_version`'s `.dirty` or commit would)."""
    import hashlib

    base = Path(__file__).resolve().parents[2]
    h = hashlib.sha256()
    for package in PACKAGES:
        for path in sorted((base / package).rglob("*.py")):
            h.update(path.relative_to(base).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
