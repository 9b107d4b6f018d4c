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

    def __enter__(self) -> SerialExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Callable[..., Any], parts: Sequence[Any], *args: Any,
            on_result: Callable[[Any], None]) -> None:
        for part in parts:
            on_result(fn(part, *args))


class ProcessExecutor:
    """Parts in `workers` spawned processes (all cores by default), at most two per worker in
    flight so that results are recorded while the rest still run. Each `map` starts its own pool
    and ends it; inside `with`, the first `map` that needs one starts a pool that every later
    `map` reuses until the block ends: a stage that fans out in rounds (dedup's verification,
    23 rounds over 94,000 records) starts its workers (~2 s, spawned) once, not every round."""

    def __init__(self, workers: int | None = None) -> None:
        self.workers = workers or os.cpu_count() or 1
        self._kept = False
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ProcessExecutor:
        self._kept = True
        return self

    def __exit__(self, *exc: object) -> None:
        self._kept = False
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def map(self, fn: Callable[..., Any], parts: Sequence[Any], *args: Any,
            on_result: Callable[[Any], None]) -> None:
        workers = min(self.workers, max(1, len(parts)))
        if self._pool is None and self._kept and workers > 1:
            self._pool = ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn"))
        if self._pool is not None:
            self._run(self._pool, self.workers, fn, parts, args, on_result)
        elif workers == 1:
            SerialExecutor().map(fn, parts, *args, on_result=on_result)
        else:
            with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
                self._run(pool, workers, fn, parts, args, on_result)

    @staticmethod
    def _run(pool: ProcessPoolExecutor, workers: int, fn: Callable[..., Any], parts: Sequence[Any],
             args: tuple[Any, ...], on_result: Callable[[Any], None]) -> None:
        pending: set[Future] = set()
        for part in parts:
            pending.add(pool.submit(fn, part, *args))
            if len(pending) >= workers * 2:
                finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in finished:
                    on_result(f.result())
        for f in pending:
            on_result(f.result())


def local_executor(workers: int | None = None) -> SerialExecutor | ProcessExecutor:
    """The default strategy for a run on this machine (a context manager too: see `ProcessExecutor`)."""
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
