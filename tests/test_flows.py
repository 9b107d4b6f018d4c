"""The Prefect flows: every stage on the offline stand-in, receipts that skip unchanged stages,
parameters validated before work starts, a real Dask cluster, and a real Prefect server with
served deployments run by `prefect deployment run`."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shards import open_dataset, verify_dataset
from tests.conftest import REPO, TINY_TRAIN, run_python
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import read_jsonl

NAMES = {"categories": ["Stand-in people"], "category_depth": 2}
PEOPLE = 40  # in the stand-in's world (the demo has 80)
BUILD = {"names": NAMES, "standin": True, "standin_people": PEOPLE, "train": TINY_TRAIN}
STAGES = ["names", "images", "detect", "identity", "dedup", "publish", "train-dcgan", "report"]


def receipts(root: Path) -> dict[str, str]:
    """Each stage's receipt's finish time: a stage that ran rewrites it."""
    return {p.stem: json.loads(p.read_text())["finished"] for p in sorted((root / "receipts").glob("*.json"))}


def ran(results: list[dict]) -> list[str]:
    return [r["stage"] for r in results if not r.get("skipped")]


@pytest.fixture(scope="module")
def built(prefect_harness, tmp_path_factory):
    from flows import build_faces

    root = tmp_path_factory.mktemp("build")
    results = build_faces(root=str(root), **BUILD)
    return root, results


def test_build_faces_runs_every_stage_on_the_standin(built):
    root, results = built
    assert ran(results) == STAGES
    assert sorted(receipts(root)) == sorted(STAGES)
    published = root / "processed" / "faces-64"
    assert verify_dataset(published, decode=True).ok
    ds = open_dataset(published)
    keep = json.loads((root / "interim/faces/checked/dedup/summary.json").read_text())
    assert len(ds) == keep["kept"] >= 10  # the identity check and dedup leave the people's own distinct faces
    assert ds[0].image.shape == (64, 64, 3)
    # the card and the attribution cover every published image
    attribution = list(read_jsonl(published / "attribution.jsonl"))
    assert [a["index"] for a in attribution] == list(range(len(ds)))
    assert all(a["licence"] and a["url"] for a in attribution)
    card = (published / "README.md").read_text()
    assert f"{len(ds)} images" in card and "## Licences" in card and "open_dataset" in card
    run = Path((root / "runs" / "latest-faces-64.txt").read_text().strip())
    assert (run / "checkpoints" / "latest.pt").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 3
    assert (published / "report.html").stat().st_size > 10_000
    # the training stage's Prefect artifact carries the sample quality and the augmentation used
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        key = ArtifactFilterKey(any_=["train-dcgan-counts"])
        data = client.read_artifacts(artifact_filter=ArtifactFilter(key=key))[0].data
    rows = {r["what"]: r["count"] for r in (json.loads(data) if isinstance(data, str) else data)}
    assert rows["quality.face_rate_real"] == summary["quality"]["face_rate_real"]
    assert rows["augment"] == summary["augment"] and "quality.fd_dlib128" in rows


def test_rerun_skips_every_stage(built):
    from flows import build_faces

    root, _ = built
    before = receipts(root)
    results = build_faces(root=str(root), **BUILD)
    assert ran(results) == []
    assert all("unchanged since" in r["reason"] for r in results)
    assert receipts(root) == before


def test_another_spelling_of_the_root_skips_every_stage(built, monkeypatch):
    """The root named relatively from another folder is the same root: nothing reruns (the
    training config carries the dataset's path, hashed relative to the root)."""
    from flows import build_faces

    root, _ = built
    before = receipts(root)
    monkeypatch.chdir(root.parent)
    results = build_faces(root=root.name, **BUILD)
    assert ran(results) == [] and receipts(root) == before


def test_the_dataset_card_code_runs(built):
    """Every fenced Python block of the card runs, from the folder that holds the dataset."""
    root, _ = built
    published = root / "processed" / "faces-64"
    card = (published / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert blocks and "faces-64" in blocks[0] and "\\" not in "".join(blocks)
    for code in blocks:
        r = subprocess.run([sys.executable, "-c", code + "\nprint('ran', len(ds), image.shape)"], cwd=published.parent,
                           capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"ran {len(open_dataset(published))} (64, 64, 3)"


def test_changed_parameter_reruns_that_stage_and_what_depends_on_it(built):
    from flows import build_faces

    root, _ = built
    before = receipts(root)
    published = open_dataset(root / "processed" / "faces-64").manifest.count
    results = build_faces(root=str(root), **BUILD, dedup={"verify": False, "threshold": 0})
    assert ran(results) == ["dedup", "publish", "train-dcgan", "report"]
    assert next(r for r in results if r["stage"] == "dedup")["reason"] == "its parameters changed"
    assert next(r for r in results if r["stage"] == "publish")["reason"].startswith("its inputs changed (keep")
    after = receipts(root)
    assert [s for s in STAGES if after[s] == before[s]] == ["names", "images", "detect", "identity"]
    # fewer near-duplicates by the hash alone at threshold 0 than verified candidates: more published images
    assert open_dataset(root / "processed" / "faces-64").manifest.count > published


def test_only_and_force_rerun_exactly_one_stage(built):
    from flows import build_faces

    root, _ = built
    before = receipts(root)
    results = build_faces(root=str(root), **BUILD, dedup={"threshold": 0},
                          only=["report"], force=True)
    assert [r["stage"] for r in results] == ["report"] and ran(results) == ["report"]
    after = receipts(root)
    assert {s for s in STAGES if after[s] != before[s]} == {"report"}
    # a deleted output makes its stage rerun; the next ones see the same content and skip
    (root / "processed" / "faces-64" / "shard-00000.lmdb").unlink()
    results = build_faces(root=str(root), **BUILD, dedup={"threshold": 0},
                          from_stage="publish")
    assert ran(results)[0] == "publish"
    assert verify_dataset(root / "processed" / "faces-64").ok


def test_force_redoes_the_work_of_a_stage(built):
    """`only=["detect"], force=true` detects every image again; its journal does not answer for it."""
    from flows import build_faces

    root, _ = built
    images = len({r["sha256"] for r in read_jsonl(root / "raw/wikipedia/images.jsonl") if r["status"] == "ok"})
    before = (root / "interim/faces/faces.jsonl").read_text()
    results = build_faces(root=str(root), **BUILD, only=["detect"], force=True)
    assert ran(results) == ["detect"] and results[0]["reason"] == "forced"
    assert results[0]["counts"]["processed_now"] == images > 20
    assert (root / "interim/faces/faces.jsonl").read_text() == before  # the same faces, made again


def test_single_stage_flows(built, tmp_path):
    """Any stage reruns on its own, as its own flow."""
    from flows import dedup_flow, report_flow
    from wikifaces.pipeline import DedupStageConfig

    root, _ = built
    r = dedup_flow(DedupStageConfig(), str(root))
    assert r["skipped"] is False or "unchanged" in r["reason"]
    r = report_flow({"dataset": "faces-64"}, str(root), force=True)
    assert r["skipped"] is False and Path(r["counts"]["report"]).exists()


def test_wikidata_names_flow_feeds_the_images_flow(prefect_harness, tmp_path):
    """The Wikidata source through Prefect: the stand-in's SPARQL endpoint, then images of the P18 files."""
    from flows import images_flow, names_flow
    from flows.deploy import WIKIDATA_PARAMETERS
    from scraping.config import ImagesConfig, NamesConfig

    config = NamesConfig.model_validate(WIKIDATA_PARAMETERS["names"])
    assert config.source == "wikidata-sparql" and config.has_image
    r = names_flow(config, str(tmp_path), standin=True)
    people = [json.loads(x) for x in (tmp_path / "raw/wikipedia/names.jsonl").read_text().splitlines()]
    assert r["counts"]["people"] == len(people) > 10 and all(p["lead_image"] for p in people)
    r = images_flow(ImagesConfig(), str(tmp_path), standin=True)
    assert r["counts"]["statuses"]["ok"] >= len(people) - 3


def test_bad_parameters_are_rejected_before_any_work(prefect_harness, tmp_path):
    from flows import build_faces, detect_flow
    from flows.testing import ParameterTypeError

    for bad in ({"dedup": {"threshold": 99}}, {"train": {"batch_size": 1}}, {"names": {"categories": []}},
                {"publish": {"dataset": "../escape"}}):
        with pytest.raises(ParameterTypeError) as e:
            build_faces(root=str(tmp_path), standin=True, **bad)
        assert next(iter(next(iter(bad.values())))) in str(e.value)
    with pytest.raises(ParameterTypeError, match="batch_size"):
        detect_flow(root=str(tmp_path), batch_size=0)
    with pytest.raises(ValueError, match="unknown stage 'detekt'"):
        build_faces(root=str(tmp_path), standin=True, only=["detekt"])
    assert not (tmp_path / "receipts").exists() and not (tmp_path / "raw").exists()


def test_build_lsun_on_a_small_release(prefect_harness, tmp_path):
    from flows import build_lsun
    from wikifaces.fixtures.lsun import write_lsun_lmdb

    write_lsun_lmdb(tmp_path / "bedroom_train_lmdb", 150, size=96, fmt="webp", seed=3, duplicates=0.1)
    results = build_lsun(lsun={"source": str(tmp_path / "bedroom_train_lmdb"), "size": 64}, root=str(tmp_path),
                         train=TINY_TRAIN, publish={"dataset": "lsun-bedroom-64", "source": "lsun"})
    assert ran(results) == ["lsun-import", "dedup", "publish", "train-dcgan"]
    ds = open_dataset(tmp_path / "processed" / "lsun-bedroom-64")
    assert 100 < len(ds) < 150  # the planted duplicates are gone
    again = build_lsun(lsun={"source": str(tmp_path / "bedroom_train_lmdb"), "size": 64}, root=str(tmp_path),
                       train=TINY_TRAIN, publish={"dataset": "lsun-bedroom-64", "source": "lsun"})
    assert ran(again) == []


def test_dask_cluster_gives_the_same_output_as_threads(built, tmp_path):
    """detect, identity (descriptors) and dedup fan out over a real distributed.LocalCluster (2 worker processes)."""
    from distributed import LocalCluster

    from flows import dedup_flow, detect_flow, identity_flow
    from wikifaces.pipeline import DedupStageConfig

    src, _ = built
    roots = {}
    for name in ("threads", "dask"):
        roots[name] = tmp_path / name
        shutil.copytree(src / "raw", roots[name] / "raw")
    detect_flow(root=str(roots["threads"]), batch_size=8)
    identity_flow(root=str(roots["threads"]), batch_size=8)
    dedup_flow(DedupStageConfig(), str(roots["threads"]), part_size=20)
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        detect_flow(root=str(roots["dask"]), batch_size=8, dask_address=cluster.scheduler_address)
        identity_flow(root=str(roots["dask"]), batch_size=8, dask_address=cluster.scheduler_address)
        dedup_flow(DedupStageConfig(), str(roots["dask"]), part_size=20, dask_address=cluster.scheduler_address)

    def rows(root: Path) -> list[dict]:
        return sorted((r for r in read_jsonl(root / "interim/faces/faces.jsonl")),
                      key=lambda r: json.dumps(r, sort_keys=True))

    assert rows(roots["dask"]) == rows(roots["threads"]) and len(rows(roots["dask"])) > 20
    a, b = (open_dataset(roots[n] / "interim/faces/shards") for n in ("threads", "dask"))
    assert len(a) == len(b)
    by_key = {a.read_meta(i)["key"]: a.read_bytes(i) for i in range(len(a))}
    assert all(by_key[b.read_meta(i)["key"]] == b.read_bytes(i) for i in range(len(b)))
    identity = [(roots[n] / "interim/faces/identity.jsonl").read_text() for n in ("threads", "dask")]
    assert identity[0] == identity[1] and '"verified"' in identity[0]
    keep = [(roots[n] / "interim/faces/checked/dedup/keep.npy").read_bytes() for n in ("threads", "dask")]
    assert keep[0] == keep[1]


def test_stages_do_not_import_prefect():
    r = run_python("import sys, scraping, faces, dedup, shards, training, wikifaces.pipeline, wikifaces.cli, "
                   "flows.server\nbad = sorted(m for m in sys.modules if m.split('.')[0] == 'prefect')\n"
                   "print(bad[:5]); sys.exit(1 if bad else 0)")
    assert r.returncode == 0, r.stdout + r.stderr


# -- a real Prefect server, served deployments, `prefect deployment run` ------------------------------------------
def _wait_for(predicate, timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(1)
    raise AssertionError(f"{what} within {timeout:.0f} s" + (f": {log.read_text()[-3000:]}" if log else ""))


def _flow_runs(api: str, flow: str) -> list[dict]:
    import urllib.request

    body = json.dumps({"flows": {"name": {"any_": [flow]}}}).encode()
    request = urllib.request.Request(f"{api}/flow_runs/filter", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as r:
        return json.loads(r.read())


def test_end_to_end_with_a_real_server_and_deployments(tmp_path):
    from flows.server import free_port, start_server, stop_server

    home, root = tmp_path / "prefect", tmp_path / "data"
    api = start_server(home, free_port())
    # no WIKIFACES_ROOT: served from tmp_path, a run without `root` builds in the relative `data`
    env = {**{k: v for k, v in os.environ.items() if k != "WIKIFACES_ROOT"}, "PREFECT_API_URL": api,
           "PREFECT_HOME": str(home), "PYTHONPATH": str(REPO)}
    bin_dir = Path(sys.executable).parent
    serve_log = tmp_path / "serve.log"
    with open(serve_log, "wb") as log:
        serving = subprocess.Popen([str(bin_dir / "wikifaces"), "serve"], stdout=log, stderr=subprocess.STDOUT,
                                   env=env, cwd=tmp_path, start_new_session=True)
    try:
        _wait_for(lambda: b"Your deployments are being served" in serve_log.read_bytes() or serving.poll() is not None,
                  180, "`wikifaces serve` did not serve", serve_log)
        assert serving.poll() is None, serve_log.read_text()
        params = {"train": TINY_TRAIN, "standin_people": 24}

        def deploy_run(**extra: str) -> subprocess.CompletedProcess:
            return subprocess.run([str(bin_dir / "prefect"), "deployment", "run", "build-faces/demo", "--params",
                                   json.dumps({**params, **extra}), "--watch", "--watch-timeout", "600"], env=env,
                                  capture_output=True, text=True, timeout=660)

        first = deploy_run(root=str(root))  # the absolute root, as `make demo` names it
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:] + serve_log.read_text()[-3000:]
        check = subprocess.run([str(bin_dir / "wikifaces"), "verify", str(root / "processed" / "faces-64")],
                               env=env, capture_output=True, text=True, timeout=300)
        assert check.returncode == 0, check.stdout + check.stderr
        before = receipts(root)
        assert sorted(before) == sorted(STAGES)
        # deployed, the build trains through the train-dcgan deployment (its own flow run)
        train_runs = _flow_runs(api, "train-dcgan")
        assert len(train_runs) == 1 and train_runs[0]["deployment_id"] and train_runs[0]["state_type"] == "COMPLETED"
        second = deploy_run()  # the deployment's default: the relative root `data`, from the project folder
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        assert receipts(root) == before, "a second run, with the root spelt relatively, must skip every stage"
    finally:
        os.killpg(serving.pid, signal.SIGTERM)
        try:
            serving.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(serving.pid, signal.SIGKILL)
            serving.wait()
        assert stop_server(home)
    assert not (home / "server.json").exists()


def test_stage_hash_ignores_http_manners_and_the_standin_port():
    """A stand-in on another free port, or a politer client, is the same names stage; another
    category or another wiki is not."""
    from scraping.config import HttpConfig, NamesConfig
    from wikifaces.pipeline import STAGES

    def names(category: str, api: str, contact: str) -> NamesConfig:
        host = api.split("/")[2]
        return NamesConfig(categories=(category,), http=HttpConfig(api_url=f"{api}/w/api.php", contact=contact,
                                                                    allowed_download_hosts=(host,)))

    root = DataRoot(Path("data"))
    base = STAGES["names"].hash(names("People", "http://127.0.0.1:8765", "a"), root)
    assert STAGES["names"].hash(names("People", "http://127.0.0.1:40123", "someone else"), root) == base
    assert STAGES["names"].hash(names("Others", "http://127.0.0.1:8765", "a"), root) != base
    assert STAGES["names"].hash(names("People", "https://de.wikipedia.org", "a"), root) != base


def test_stage_hash_is_the_same_for_every_spelling_of_the_root(tmp_path, monkeypatch):
    from training import TrainConfig
    from wikifaces.pipeline import STAGES

    monkeypatch.chdir(tmp_path)
    absolute = DataRoot(tmp_path / "data")
    relative = DataRoot(Path("data"))
    h = STAGES["train-dcgan"].hash
    base = h(TrainConfig(dataset=absolute.processed("faces-64")), absolute)
    assert h(TrainConfig(dataset=relative.processed("faces-64")), relative) == base
    assert h(TrainConfig(dataset=Path("./data/../data/processed/faces-64")), relative) == base
    assert h(TrainConfig(dataset=relative.processed("faces-32")), relative) != base
    assert h(TrainConfig(dataset=absolute.processed("faces-64"), workers=7), absolute) == base
