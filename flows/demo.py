"""`make demo` / `wikifaces demo`: `build-faces` end to end on the embedded defaults.

A local Prefect server on SQLite (started in the background under `<root>/prefect`, or the one
PREFECT_API_URL names), the offline Wikipedia stand-in, a short CPU training run; then where
the dataset, the report and the Prefect UI are.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from wikifaces.core.paths import DataRoot

from .server import healthy, start_server, ui_url


def connect(root: DataRoot, port: int | None = None, console: Console | None = None) -> str:
    """Point this process at a Prefect server: PREFECT_API_URL's if it answers, else the local one
    under the data root (started when needed). Must run before prefect is imported."""
    url = os.environ.get("PREFECT_API_URL")
    if url and healthy(url):
        return url
    home = (root.root / "prefect").resolve()
    if console is not None:
        console.print(f"starting a local Prefect server on SQLite (home {home}; takes ~20 s the first time)")
    url = start_server(home, port)
    os.environ["PREFECT_API_URL"] = url
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    return url


def run_demo(root: str | Path | None, console: Console, port: int | None = None,
             parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    data = DataRoot(DataRoot.resolve(root).root.resolve())
    api = connect(data, port, console)
    from .build import build_faces
    from .deploy import DEMO_PARAMETERS

    console.rule(f"build-faces on the offline stand-in, Prefect at {ui_url(api)}")
    t0 = time.perf_counter()
    results = build_faces(root=str(data.root), **(parameters or DEMO_PARAMETERS))
    minutes = (time.perf_counter() - t0) / 60
    table = Table("stage", "what happened", "counts")
    for r in results:
        counts = r.get("counts") or {}
        shown = ", ".join(f"{k} {v}" for k, v in counts.items() if isinstance(v, int | float) and not
                          isinstance(v, bool))[:90]
        table.add_row(r["stage"], f"skipped: {r['reason']}" if r.get("skipped") else "ran", shown)
    console.print(table)
    from shards import verify_dataset

    dataset = data.processed("faces-64")
    report = verify_dataset(dataset, decode=True)
    console.print(f"build-faces finished in {minutes:.1f} min")
    console.print(f"dataset: {dataset} ({'verified' if report.ok else 'FAILED verification'}); "
                  f"card {dataset / 'README.md'}")
    console.print(f"report:  {dataset / 'report.html'}")
    run = (data.runs / "latest-faces-64.txt")
    if run.exists():
        console.print(f"training run: {run.read_text().strip()}")
    console.print(f"Prefect UI: {ui_url(api)} (the server keeps running; `wikifaces server stop` ends it)")
    if not report.ok:
        raise SystemExit(f"the published dataset failed verification: {report.damaged}")
    return results
