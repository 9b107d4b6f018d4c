"""Fan-out: one signature, interchangeable strategies (as img2dataset's distributors share one).

A stage that fans out cuts its work into parts (`plan`), runs `run_part(part, *args)` for each
through an executor, hands every result to `on_result` in the calling process as it lands (the
stage journals it there, so a killed run resumes), then `finish`es. The strategies here run in
this process or in local processes; `flows` adds one that maps parts as Prefect tasks, on
threads or on a Dask cluster. Part functions must be importable module-level functions, and
parts and results small (paths and rows, never image bytes).
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from typing import Any, Protocol


class Executor(Protocol):
    """Runs `fn(part, *args)` for every part; each result goes to `on_result` as it completes."""

    def map(self, fn: Callable[..., Any], parts: Sequence[Any], *args: Any,
            on_result: Callable[[Any], None]) -> None: ...


class SerialExecutor:
    """Every part in this process, in order: for one core, tests and debugging."""

    def map(self, fn: Callable[..., Any], parts: Sequence[Any], *args: Any,
            on_result: Callable[[Any], None]) -> None:
        for part in parts:
            on_result(fn(part, *args))


class ProcessExecutor:
    """Parts in `workers` spawned processes (all cores by default), at most two per worker in
    flight so that results are recorded while the rest still run."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1

    def map(self, fn: Callable[..., Any], parts: Sequence[Any], *args: Any,
            on_result: Callable[[Any], None]) -> None:
        workers = min(self.workers, max(1, len(parts)))
        if workers == 1:
            SerialExecutor().map(fn, parts, *args, on_result=on_result)
            return
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
            pending: set[Future] = set()
            for part in parts:
                pending.add(pool.submit(fn, part, *args))
                if len(pending) >= workers * 2:
                    finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in finished:
                        on_result(f.result())
            for f in pending:
                on_result(f.result())


def local_executor(workers: int | None = None) -> Executor:
    """The default strategy for a run on this machine."""
    return ProcessExecutor(workers) if (workers or os.cpu_count() or 1) > 1 else SerialExecutor()


def fan_out(executor: Executor | None, fn: Callable[..., Any], parts: Sequence[Any], *args: Any,
            on_result: Callable[[Any], None], label: str, progress: bool = True, workers: int | None = None) -> None:
    """Run the parts through `executor` (default: `local_executor(workers)`), recording each result
    as it lands, with a progress bar in parts (and time left) on the terminal."""
    from rich.progress import Progress

    with Progress(*Progress.get_default_columns(), disable=not progress or not parts, transient=True) as bar:
        task = bar.add_task(label, total=len(parts))

        def record(result: Any) -> None:
            on_result(result)
            bar.advance(task)

        (executor or local_executor(workers)).map(fn, parts, *args, on_result=record)
