"""Whole-build reliability: one build per data root (a lock that a SIGKILL releases), a full disk
in the middle of a stage, and crashes at random moments (a short chaos run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from wikifaces.core.lock import RootLocked, root_lock

HOLD = """
import sys, time
from wikifaces.core.lock import root_lock
with root_lock(sys.argv[1], "a test build"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(root) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(root)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert p.stdout.readline().strip() == "held"
    return p


def test_second_build_on_one_root_refuses_and_a_killed_holder_frees_it(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(RootLocked, match=rf"in use by another build \(a test build, pid {holder.pid}"), \
                root_lock(tmp_path, "second"):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with root_lock(tmp_path, "after the crash"), root_lock(tmp_path, "nested in the same process"):
        assert (tmp_path / ".lock").read_text().count("after the crash") == 1


def test_build_flow_refuses_a_root_in_use(prefect_harness, tmp_path):
    from flows import build_faces

    holder = _holder(tmp_path)
    try:
        t0 = time.monotonic()
        with pytest.raises(RootLocked, match="wait for it to finish"):
            build_faces(root=str(tmp_path), standin=True)
        assert time.monotonic() - t0 < 30
        assert not (tmp_path / "receipts").exists() and not (tmp_path / "raw").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()


def test_chaos_kills_then_identical_dataset(prefect_harness, tmp_path, monkeypatch):
    """bench/chaos.py, short: build-faces killed with SIGKILL 3 times at random moments, then let
    finish, gives the clean build's published records, no lost or duplicated row, no temporary file."""
    from bench.chaos import chaos

    monkeypatch.setenv("PREFECT_API_URL", prefect_harness)
    figures = chaos(runs=1, kills=3, people=24, seed=1, work=tmp_path, log=lambda *_: None)
    assert figures["runs"] == 1 and figures["kills"] >= 2, figures
    assert figures["identical"] == 1, figures
    assert figures["lost records"] == figures["duplicated records"] == figures["leftover temporary files"] == 0


def test_no_path_is_built_from_scraped_text(pipeline_root):
    """A whole build whose stand-in has a title with '/' and '../' (and scripts in author names):
    every file lies inside the data root and no name carries scraped text."""
    from wikifaces.core.tables import read_jsonl
    from wikifaces.fixtures.standin.corpus import HOSTILE_TITLE

    root = pipeline_root.root.resolve()
    rows = list(read_jsonl(root / "raw/wikipedia/images.jsonl"))
    assert any(r["title"] == HOSTILE_TITLE and r["status"] == "ok" for r in rows)  # it was processed
    scraped = {w for r in rows for w in (r["title"] or "").replace("/", " ").split() if len(w) > 3}
    for path in root.rglob("*"):
        assert path.resolve().is_relative_to(root), path
        assert not path.is_symlink(), path
        assert ".." not in path.name and "passwd" not in path.name and "<" not in path.name, path
        assert not any(word in path.name for word in scraped), path
    assert not (root.parent / "etc").exists()
