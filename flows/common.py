"""What every flow shares: skip-or-run around a stage, artifacts, task runners, the stand-in."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from prefect.task_runners import ThreadPoolTaskRunner

from wikifaces.core.files import sweep_temporaries
from wikifaces.core.lock import root_lock
from wikifaces.core.paths import DataRoot
from wikifaces.pipeline import stage_status, write_receipt

from .server import free_port, port_free

STANDIN_PORT = 8765
# Network tasks retry on top of the HTTP client's own retries (those honour Retry-After).
NETWORK_RETRY_DELAYS = [10, 60, 300]


def task_runner(dask_address: str | None) -> Any:
    """Fan-out work goes to an existing Dask cluster when given its address, else to threads here."""
    if dask_address:
        from prefect_dask import DaskTaskRunner

        return DaskTaskRunner(address=dask_address)
    return ThreadPoolTaskRunner(max_workers=os.cpu_count() or 1)


@dataclass(frozen=True)
class Decision:
    """Whether a stage runs, and why (its result, when it is skipped)."""

    skip: bool
    reason: str
    result: dict[str, Any]
    forced: bool = False  # runs because `force` said so: its earlier per-item results are void


def check(stage: str, config: Any, root: DataRoot, force: bool) -> Decision:
    """Run or skip the stage, by its receipt; said in the log and, for a skip, an artifact."""
    current, why = stage_status(stage, config, root)
    logger = get_run_logger()
    if current and not force:
        logger.info("%s: skipped, %s", stage, why)
        create_markdown_artifact(key=f"{stage}-summary", markdown=f"**{stage}**: skipped, {why}.",
                                 description=f"{stage}: skipped")
        return Decision(True, why, {"stage": stage, "skipped": True, "reason": why})
    reason = "forced" if force else why
    logger.info("%s: running, %s", stage, reason)
    return Decision(False, reason, {}, forced=force)


def done(stage: str, config: Any, root: DataRoot, counts: dict[str, Any], decision: Decision,
         picture: Path | None = None) -> dict[str, Any]:
    """Write the stage's receipt and publish what it did as artifacts."""
    write_receipt(stage, config, root, counts)
    rows = [{"what": k, "count": v} for k, v in _flat(counts).items()]
    create_table_artifact(key=f"{stage}-counts", table=rows, description=f"{stage}: counts and reasons")
    lines = [f"## {stage}", "", f"Ran because {decision.reason}.", "",
             *[f"- **{r['what']}**: {r['count']}" for r in rows]]
    create_markdown_artifact(key=f"{stage}-summary", markdown="\n".join(lines), description=f"{stage}: summary")
    if picture is not None and picture.exists():
        create_link_artifact(key=f"{stage}-picture", link=picture.resolve().as_uri(),
                             link_text=f"{stage}: {picture.name}", description="a picture to look at")
    get_run_logger().info("%s: done, %s", stage, ", ".join(f"{r['what']}={r['count']}" for r in rows[:8]))
    return {"stage": stage, "skipped": False, "reason": decision.reason, "counts": counts}


def _flat(counts: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in counts.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        elif not isinstance(v, list):
            out[f"{prefix}{k}"] = v
    return out


@contextlib.contextmanager
def building(data: DataRoot, name: str) -> Iterator[None]:
    """Hold the data root's lock for a build, and first clear what killed writes left behind."""
    with root_lock(data.root, name):
        stale = sweep_temporaries(data.root)
        if stale:
            get_run_logger().info("%s: removed %d temporary files left by an interrupted run", name, len(stale))
        yield


@contextlib.contextmanager
def standin(enabled: bool, people: int = 80) -> Iterator[Callable[[Any], Any]]:
    """A function that points an HttpConfig at a stand-in started here (on port 8765 when free, so
    that its URLs, and so the stages' parameters, stay the same from run to run); or, when not
    enabled, leaves it as it is."""
    if not enabled:
        yield lambda http: http
        return
    from wikifaces.fixtures.standin import StandinServer, build_corpus

    port = STANDIN_PORT if port_free(STANDIN_PORT) else free_port()
    with StandinServer(build_corpus(people, all_photos=True), port=port) as server:
        yield lambda http: http.model_copy(update={**server.endpoints(),
                                                   "contact": http.contact or "wikifaces demo (offline)"})


@contextlib.contextmanager
def standin_http(http: Any, enabled: bool) -> Iterator[Any]:
    with standin(enabled) as rewrite:
        yield rewrite(http)
