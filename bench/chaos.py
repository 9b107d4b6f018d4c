"""Crash consistency of `build-faces`: SIGKILL at random moments, rerun, compare with a clean build.

Each run builds the faces dataset from the offline stand-in with `wikifaces build --standin` (the
Prefect flow, reported to a Prefect server), killing the process `--kills` times at a random
moment (any stage: mid-download, mid-shard, mid-checkpoint) and then letting it finish. Its
published dataset is compared with an uninterrupted build's: the same records (key, metadata and
the sha256 of the stored image), no lost or duplicated row in the stage tables, and no temporary
file left anywhere under the data root.

    .venv/bin/python bench/chaos.py [--runs 10] [--kills 3] [--people 40] [--seed 0]

Uses PREFECT_API_URL when it answers, else starts a local Prefect server for the run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

# a short run with the quality judge on 16 samples: 256 (the default) spent 24 s of a 68 s build in it
TRAIN = {"image_size": 32, "g_width": 32, "d_width": 32, "batch_size": 16, "max_steps": 40, "sample_every": 10,
         "checkpoint_every": 5, "fixed_samples": 16, "quality_samples": 16, "desc": "chaos"}
VOLATILE = {"seconds", "finished", "fetched", "created", "elapsed"}  # times, not content
LOOPBACK_PORT = re.compile(r"(127\.0\.0\.1|localhost):\d+")


def neutral(text: str) -> str:
    """The stand-in takes whichever port is free at each start: its URLs are compared without it."""
    return LOOPBACK_PORT.sub(r"\1", text)


@dataclass
class RunResult:
    kills: int = 0
    finished_early: int = 0
    identical: bool = False
    lost: int = 0
    duplicated: int = 0
    leftovers: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


STARTUP_SECONDS = 3.0  # a rerun's own start (interpreter, imports, the flow run) before it resumes work


def build_command(root: Path, people: int) -> list[str]:
    params = json.dumps({"standin_people": people, "train": TRAIN})
    return [str(Path(sys.executable).with_name("wikifaces")), "build", "--standin", "--root", str(root), "-p", params]


def run_build(root: Path, people: int, env: dict[str, str], kill_after: float | None, log: Path) -> tuple[bool, float]:
    """Run one build; kill it with SIGKILL after `kill_after` seconds. (completed, seconds)."""
    t0 = time.monotonic()
    with open(log, "ab") as out:
        p = subprocess.Popen(build_command(root, people), stdout=out, stderr=subprocess.STDOUT, env=env,
                             start_new_session=True)
        try:
            p.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            return False, time.monotonic() - t0
    if p.returncode != 0:
        raise RuntimeError(f"the build failed with exit {p.returncode}: see {log}")
    return True, time.monotonic() - t0


def records(root: Path) -> list[tuple[str, str, str]]:
    """(key, metadata, sha256 of the stored image) of every published record, in order."""
    from shards import open_dataset

    ds = open_dataset(root / "processed" / "faces-64")
    out = []
    for i in range(len(ds)):
        meta = {k: v for k, v in ds.read_meta(i).items() if k not in VOLATILE}
        digest = hashlib.sha256(ds.read_bytes(i)).hexdigest()
        out.append((meta.get("key", ""), neutral(json.dumps(meta, sort_keys=True)), digest))
    ds.close()
    return out


def table_rows(root: Path) -> dict[str, Counter[str]]:
    """Every stage table's rows (minus times), counted: a duplicated row shows as a count of 2."""
    from wikifaces.core.tables import read_jsonl

    tables = {"names": root / "raw/wikipedia/names.jsonl", "images": root / "raw/wikipedia/images.jsonl",
              "faces": root / "interim/faces/faces.jsonl"}
    return {name: Counter(neutral(json.dumps({k: v for k, v in r.items() if k not in VOLATILE}, sort_keys=True))
                          for r in read_jsonl(path)) for name, path in tables.items()}


def leftovers(root: Path) -> list[str]:
    found = []
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            if name.endswith((".tmp", ".tmp-lock", ".partial")) or ".tmp." in name:
                found.append(str(Path(dirpath, name).relative_to(root)))
    return found


def compare(clean: Path, chaos: Path, result: RunResult) -> None:
    a, b = records(clean), records(chaos)
    keys_a, keys_b = Counter(k for k, _, _ in a), Counter(k for k, _, _ in b)
    result.lost += sum((keys_a - keys_b).values())
    result.duplicated += sum(n - 1 for n in keys_b.values() if n > 1)
    if a != b:
        result.problems.append("published records differ")
    ta, tb = table_rows(clean), table_rows(chaos)
    for name in ta:
        lost, extra = ta[name] - tb[name], tb[name] - ta[name]
        result.lost += sum(lost.values())
        result.duplicated += sum(n - 1 for n in tb[name].values() if n > 1)
        if lost or extra:
            result.problems.append(f"{name} table differs: {sum(lost.values())} rows missing, "
                                   f"{sum(extra.values())} unexpected")
    summary = json.loads(next((chaos / "runs").glob("*/summary.json")).read_text()) if list(
        (chaos / "runs").glob("*/summary.json")) else {}
    if summary.get("steps") != TRAIN["max_steps"]:
        result.problems.append(f"training ended at step {summary.get('steps')}, not {TRAIN['max_steps']}")
    result.leftovers = leftovers(chaos)
    result.identical = not result.problems and not result.leftovers and result.lost == 0 and result.duplicated == 0


def chaos(runs: int = 10, kills: int = 3, people: int = 40, seed: int = 0, work: Path | None = None,
          log=print) -> dict[str, int | float]:
    """Run the experiment; returns the headline figures."""
    from flows.server import healthy, start_server, stop_server

    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="wikifaces-chaos-", dir=work))
    env = dict(os.environ)
    started = None
    if not (env.get("PREFECT_API_URL") and healthy(env["PREFECT_API_URL"])):
        started = tmp / "prefect"
        env["PREFECT_API_URL"] = start_server(started)
        env["PREFECT_HOME"] = str(started)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    try:
        clean = tmp / "clean"
        _, seconds = run_build(clean, people, env, None, tmp / "clean.log")
        log(f"clean build: {seconds:.0f} s")
        results = []
        for r in range(runs):
            root = tmp / f"run-{r:02d}"
            result = RunResult()
            left = seconds  # of the clean build's work, what a rerun still has to do (roughly)
            for _ in range(kills):
                # the rerun skips finished stages (and resumes the killed one), so aim the kill inside
                # what is left: a kill drawn from the whole build's time would often come too late
                kill_after = rng.uniform(2.0, max(2.5, 0.9 * left))
                completed, _ = run_build(root, people, env, kill_after, tmp / f"run-{r:02d}.log")
                if completed:
                    result.finished_early += 1
                    break
                result.kills += 1
                left = max(4.0, left - kill_after + STARTUP_SECONDS)
            run_build(root, people, env, None, tmp / f"run-{r:02d}.log")
            compare(clean, root, result)
            log(f"run {r + 1}/{runs}: {result.kills} kills, {'identical' if result.identical else 'DIFFERENT'}"
                + (f" ({'; '.join(result.problems + result.leftovers[:3])})" if not result.identical else ""))
            results.append(result)
    finally:
        if started is not None:
            stop_server(started)
    return {"runs": len(results), "kills": sum(r.kills for r in results),
            "finished before a kill": sum(r.finished_early for r in results),
            "identical": sum(r.identical for r in results), "lost records": sum(r.lost for r in results),
            "duplicated records": sum(r.duplicated for r in results),
            "leftover temporary files": sum(len(r.leftovers) for r in results), "work": str(tmp)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--kills", type=int, default=3, help="SIGKILLs per run before it is let finish")
    ap.add_argument("--people", type=int, default=40, help="people in the stand-in's world")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    figures = chaos(args.runs, args.kills, args.people, args.seed)
    for label in ("runs", "kills", "finished before a kill", "identical", "lost records", "duplicated records",
                  "leftover temporary files"):
        print(f"{label}: {figures[label]}")


if __name__ == "__main__":
    main()
