"""The architecture holds: one-way layers (import-linter's contracts, and what each layer loads in
a fresh interpreter), `import shards` cheap and alone, one receipt per stage run, every CLI
mistake one line, and no CLI default written a second time."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from .conftest import REPO, run_python

OURS = ("wikifaces", "scraping", "faces", "dedup", "shards", "training", "flows")
LINT = Path(sys.executable).parent / "lint-imports"


def loaded_after(statement: str) -> dict:
    """Top-level packages loaded by a statement in a fresh interpreter, and how long it took."""
    r = run_python("import sys, time, json\nt = time.perf_counter()\n" + statement +
                   "\ndt = time.perf_counter() - t\n"
                   "print(json.dumps({'seconds': dt, 'modules': sorted({m.split('.')[0] for m in sys.modules}),"
                   " 'ours': sorted(m for m in sys.modules if m.split('.')[0] in " + repr(OURS) + ")}))")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement,allowed,never", [
    ("import wikifaces.core.paths, wikifaces.core.tables, wikifaces.core.lock, wikifaces.core.identity, "
     "wikifaces.core.executor, wikifaces.core.imaging", {"wikifaces"}, {"torch", "prefect", "numba", "shards"}),
    ("import shards", {"shards"}, {"torch", "prefect", "numba", "cv2"}),
    ("import scraping.names, scraping.images, faces.stage, dedup.stage, wikifaces.publish",
     {"wikifaces", "shards", "scraping", "faces", "dedup"}, {"prefect", "torch", "flows", "training"}),
    ("import wikifaces.pipeline", {"wikifaces", "shards", "scraping", "faces", "dedup", "training"},
     {"prefect", "torch", "numba", "flows"}),
    ("import flows, flows.build, flows.stages, flows.deploy", set(OURS), {"torch", "numba"}),
])
def test_each_layer_loads_only_what_is_below_it(statement, allowed, never):
    got = loaded_after(statement)
    assert set(m.split(".")[0] for m in got["ours"]) <= allowed, got["ours"]
    assert not never & set(got["modules"]), never & set(got["modules"])


def test_import_shards_is_fast_and_alone():
    runs = [loaded_after("import shards") for _ in range(5)]  # the best of 5: the machine may be busy
    assert {m.split(".")[0] for r in runs for m in r["ours"]} == {"shards"}
    assert min(r["seconds"] for r in runs) < 0.3, [round(r["seconds"], 3) for r in runs]


def test_the_layers_contract_holds_and_catches_an_upward_import(tmp_path):
    ok = subprocess.run([str(LINT)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout[-3000:]
    assert "Contracts: 3 kept, 0 broken." in ok.stdout
    # the same tree with one upward import, hidden in a function: the contract must break
    for name in (*OURS, "pyproject.toml"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    reader = tmp_path / "shards" / "reader.py"
    reader.write_text(reader.read_text() + "\n\ndef _upward():\n    from wikifaces.pipeline import run_stage\n\n"
                      "    return run_stage\n")
    env = {"PATH": str(Path(sys.executable).parent), "PYTHONPATH": str(tmp_path), "HOME": str(tmp_path)}
    bad = subprocess.run([str(LINT), "--no-cache"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env=env)
    assert bad.returncode != 0
    assert "shards.reader -> wikifaces.pipeline" in bad.stdout.replace("\n", " ") or \
           "shards is not allowed to import wikifaces" in bad.stdout, bad.stdout[-3000:]


def test_every_stage_run_writes_exactly_one_receipt(pipeline_root):
    root = pipeline_root.root
    receipts = sorted(p.name for p in (root / "receipts").iterdir())
    assert receipts == sorted(f"{s}.json" for s in ("names", "images", "detect", "identity", "dedup", "publish",
                                                    "train-dcgan", "report"))
    assert not [p for p in root.rglob("*receipt*.json") if p.parent.name != "receipts"]


# -- the CLI: one way to fail, no default written twice -------------------------------------------------------
MISTAKES = {
    "verify": ["verify", "{tmp}/nowhere"],
    "inspect": ["inspect", "{tmp}/nowhere"],
    "export": ["export", "{tmp}/nowhere", "{tmp}/out"],
    "export-format": ["export", "{tmp}/nowhere", "{tmp}/out", "--to", "zip"],
    "lsun-sample": ["lsun-sample", "{tmp}/lmdb", "--format", "gif"],
    "names": ["names", "--root", "{tmp}"],
    "names-file": ["names", "--names-file", "{tmp}/missing.txt", "--root", "{tmp}"],
    "images": ["images", "--standin", "http://127.0.0.1:9", "--root", "{tmp}"],
    "images-width": ["images", "--thumb-width", "777", "--root", "{tmp}"],
    "detect": ["detect", "--root", "{tmp}"],
    "identity": ["identity", "--root", "{tmp}"],
    "lsun-import": ["lsun-import", "{tmp}/nowhere", "--root", "{tmp}"],
    "dedup": ["dedup", "{tmp}/nowhere", "--root", "{tmp}"],
    "dedup-threshold": ["dedup", "--threshold", "99", "--root", "{tmp}"],
    "publish": ["publish", "--root", "{tmp}"],
    "train": ["train", "{tmp}/nowhere", "--root", "{tmp}"],
    "train-size": ["train", "{tmp}/nowhere", "--image-size", "48", "--root", "{tmp}"],
    "report": ["report", "--source", "bogus", "--root", "{tmp}"],
    "generate": ["generate", "{tmp}/nowhere"],
    "interpolate": ["interpolate", "{tmp}/nowhere"],
    "arithmetic": ["arithmetic", "{tmp}/nowhere", "--a", "0,x", "--b", "1", "--c", "2"],
    "memorisation": ["memorisation", "{tmp}/nowhere", "{tmp}/nowhere"],
    "standin": ["standin", "--people", "3"],
    "build": ["build", "--params", "{{not json", "--root", "{tmp}"],
    "unknown": ["frobnicate"],
}


@pytest.mark.parametrize("case", sorted(MISTAKES))
def test_every_command_ends_a_mistake_with_one_line(tmp_path, case):
    from wikifaces.cli import app

    args = [a.format(tmp=tmp_path) for a in MISTAKES[case]]
    r = CliRunner().invoke(app, args)
    assert r.exit_code in (1, 2), (r.exit_code, r.output)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert "Traceback" not in r.output


@pytest.mark.parametrize("group", [[], ["server"]])
def test_the_command_listing_gives_each_summary_on_one_line(group):
    """`wikifaces --help` lists each command with its docstring's first paragraph reflowed: typer
    kept the docstring's line breaks there, so on a wide terminal a summary still broke mid-sentence."""
    import inspect

    import typer.main

    from wikifaces.cli import app

    commands = typer.main.get_command(app)
    for name in group:
        commands = commands.commands[name]
    r = CliRunner().invoke(app, [*group, "--help"], env={"COLUMNS": "400"})
    assert r.exit_code == 0, r.output
    rows = {line.split()[1]: " ".join(line.strip(" │").split()[1:]) for line in r.output.splitlines()
            if line.startswith("│ ") and line.split()[1] in commands.commands}
    assert set(rows) == set(commands.commands)
    for name, command in commands.commands.items():
        summary = " ".join(inspect.cleandoc(command.help or "").split("\n\n")[0].split())
        assert rows[name] == summary, name


# options whose config field has another name
RENAMED = {("names", "depth"): "category_depth"}
STAGE_CONFIGS = {"names": "NamesConfig", "images": "ImagesConfig", "detect": "DetectConfig",
                 "identity": "IdentityConfig",
                 "lsun-import": "LsunImportConfig", "dedup": "DedupConfig", "publish": "PublishConfig",
                 "train": "TrainConfig", "report": "ReportConfig"}


def test_cli_defaults_are_the_configs_defaults():
    import typer.main

    from dedup.config import DedupConfig, LsunImportConfig
    from faces.config import DetectConfig, IdentityConfig
    from scraping.config import HttpConfig, ImagesConfig, NamesConfig
    from training.config import TrainConfig
    from wikifaces.cli import app
    from wikifaces.publish import PublishConfig
    from wikifaces.report import ReportConfig

    configs = {c.__name__: c for c in (NamesConfig, ImagesConfig, DetectConfig, IdentityConfig, LsunImportConfig,
                                       DedupConfig, PublishConfig, TrainConfig, ReportConfig)}
    group = typer.main.get_command(app)
    compared = 0
    for command, config_name in STAGE_CONFIGS.items():
        config = configs[config_name]
        for param in group.commands[command].params:
            field = RENAMED.get((command, param.name), param.name)
            owner = config if field in config.model_fields else HttpConfig if field in HttpConfig.model_fields \
                else None
            if owner is None or param.default is None:
                continue
            want = owner.model_fields[field].default
            got = param.default
            assert got == want or str(got) == str(want), (command, param.name, got, want)
            compared += 1
    assert compared >= 40


def test_every_status_in_a_build_is_in_its_closed_set(pipeline_root):
    from typing import get_args

    from faces.identity import IdentityStatus
    from faces.stage import FaceStatus
    from scraping.images import ImageStatus
    from scraping.names import NameStatus
    from wikifaces.core.tables import read_jsonl

    root = pipeline_root
    for table, closed in ((root.raw_wikipedia / "names-rejected.jsonl", NameStatus),
                          (root.raw_wikipedia / "images.jsonl", ImageStatus), (root.faces / "faces.jsonl", FaceStatus),
                          (root.faces / "identity.jsonl", IdentityStatus)):
        statuses = {r["status"] for r in read_jsonl(table)}
        assert statuses <= set(get_args(closed)), (table.name, statuses - set(get_args(closed)))
        assert statuses or table.name == "names-rejected.jsonl"  # a category build may reject no title
