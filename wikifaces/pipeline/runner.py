"""The one runner: the CLI's stage commands, the flows, the builds and the tests all run a stage
through `run_stage`, which skips it when its receipt says nothing changed, runs it otherwise,
and writes exactly one receipt (`<root>/receipts/<stage>.json`).

A stage is skipped when its receipt records the same results hash and the same input
fingerprints, and its outputs are still as it left them. A changed parameter changes the hash
and reruns the stage; if its outputs change, the next stages' inputs change, and they rerun
too. `force` reruns it and voids its per-item results. Inside a stage, its own per-item resume
(journals keyed by parameters and code) does the work.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from wikifaces.core.errors import UserError
from wikifaces.core.executor import Executor
from wikifaces.core.files import sweep_temporaries
from wikifaces.core.paths import DataRoot

from .receipts import Receipt, fingerprint
from .registry import STAGES, RunContext

log = logging.getLogger("wikifaces.pipeline")


class UnknownStage(UserError, ValueError):
    """A stage name that is not in the build."""


@dataclass
class StageResult:
    stage: str
    skipped: bool
    reason: str
    counts: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0
    outputs: dict[str, str] = field(default_factory=dict)
    summary: Any = None  # the stage's own typed summary (None when skipped)
    picture: Path | None = None  # something to look at, when the stage makes one

    def as_dict(self) -> dict[str, Any]:
        """The plain form flows return and the CLI prints."""
        out: dict[str, Any] = {"stage": self.stage, "skipped": self.skipped, "reason": self.reason}
        if not self.skipped:
            out["counts"] = self.counts
        return out


def receipt_path(stage: str, root: DataRoot) -> Path:
    return root.root / "receipts" / f"{stage}.json"


def stage_status(name: str, config: Any, root: DataRoot) -> tuple[bool, str]:
    """(up to date, why) for a stage with this config."""
    stage = STAGES[name]
    receipt = Receipt.read(receipt_path(name, root))
    if receipt is None:
        return False, "never ran"
    if receipt.config_hash != stage.hash(config, root):
        return False, "its parameters changed"
    inputs = {k: fingerprint(p) for k, p in stage.inputs(config, root).items()}
    if receipt.inputs != inputs:
        changed = sorted(k for k in set(inputs) | set(receipt.inputs) if inputs.get(k) != receipt.inputs.get(k))
        return False, f"its inputs changed ({', '.join(changed)})"
    for label, path in stage.outputs(config, root).items():
        if receipt.outputs.get(label) != fingerprint(path) or not fingerprint(path):
            return False, f"its output {label} is missing or was changed"
    return True, f"unchanged since {receipt.finished}"


def run_stage(name: str, config: Any, root: str | Path | DataRoot | None = None, *, force: bool = False,
              progress: bool = True, executor: Executor | None = None,
              on_progress: Callable[[int, int], None] | None = None,
              before: Callable[[str], None] | None = None) -> StageResult:
    """Run one stage unless it is up to date (or `force`); write its one receipt. `before(reason)`
    is called when it will run (adapters log or publish it)."""
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    stage = STAGES[name]
    config = stage.config.model_validate(config) if not isinstance(config, stage.config) else config
    current, why = stage_status(name, config, data)
    if current and not force:
        log.info("%s: skipped, %s", name, why)
        receipt = Receipt.read(receipt_path(name, data))
        return StageResult(name, True, why, receipt.counts if receipt else {}, 0.0, receipt.outputs if receipt else {})
    reason = "forced" if force else why
    log.info("%s: running, %s", name, reason)
    if force:  # until it finishes, the stage has not run: a crash or a retry then resumes, never skips
        receipt_path(name, data).unlink(missing_ok=True)
    if before is not None:
        before(reason)
    if stale := sweep_stage_temporaries(name, config, data):
        log.info("%s: removed %d temporary files a killed run left (%.1f MB)", name, len(stale),
                 sum(size for _, size in stale) / 1e6)
    t0 = time.perf_counter()
    summary = stage.run(config, data, RunContext(progress, force, executor, on_progress))
    seconds = time.perf_counter() - t0
    outputs = write_receipt(name, config, data, summary.counts)
    picture = stage.picture(config, data, summary)
    return StageResult(name, False, reason, summary.counts, seconds, outputs, summary,
                       picture if picture is not None and picture.exists() else None)


def sweep_stage_temporaries(name: str, config: Any, root: DataRoot) -> list[tuple[Path, int]]:
    """Remove what killed atomic writes left in the folders a stage writes (their parents'
    trees), none a live writer holds; the files removed, with their sizes."""
    folders = sorted({p.parent for p in STAGES[name].outputs(config, root).values()})
    tops = [f for f in folders if not any(f != g and f.is_relative_to(g) for g in folders)]  # nested: swept above
    return [swept for folder in tops for swept in sweep_temporaries(folder)]


def write_receipt(name: str, config: Any, root: DataRoot, counts: dict[str, Any]) -> dict[str, str]:
    """Record a finished stage: results hash, input and output fingerprints, counts."""
    stage = STAGES[name]
    outputs = {k: fingerprint(p) for k, p in stage.outputs(config, root).items()}
    Receipt(stage=name, config_hash=stage.hash(config, root), config=_jsonable(config),
            inputs={k: fingerprint(p) for k, p in stage.inputs(config, root).items()},
            outputs=outputs, counts=counts).write(receipt_path(name, root))
    return outputs


def _jsonable(config: Any) -> dict[str, Any]:
    return config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)


def select_stages(order: tuple[str, ...], from_stage: str | None = None, only: list[str] | None = None
                  ) -> list[str]:
    """The stages of `order` to run: all, those from `from_stage` on, or exactly `only`."""
    for s in [from_stage, *(only or [])]:
        if s is not None and s not in order:
            raise UnknownStage(f"unknown stage {s!r}: the stages are {', '.join(order)}")
    if only:
        return [s for s in order if s in only]
    if from_stage:
        return list(order[order.index(from_stage):])
    return list(order)
