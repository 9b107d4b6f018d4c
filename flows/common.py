"""What the builds share: the data root's lock, and the offline stand-in."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from prefect import get_run_logger

from wikifaces.core.files import sweep_temporaries
from wikifaces.core.lock import root_lock
from wikifaces.core.paths import DataRoot

from .server import free_port, port_free

STANDIN_PORT = 8765


@contextlib.contextmanager
def building(data: DataRoot, name: str) -> Iterator[None]:
    """Hold the data root's lock for a build, and first clear what killed writes left behind."""
    with root_lock(data.root, name):
        stale = sweep_temporaries(data.root)
        if stale:
            get_run_logger().info("%s: removed %d temporary files left by an interrupted run", name, len(stale))
        yield


LOCAL_API_RATE = 50.0
LOCAL_BYTE_RATE = 100_000_000


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
        # the stand-in is ours, on this machine: Wikimedia's pace (5 API calls a second, 3 MB/s) would
        # only make the demo wait; these fields are execution-only, so results and hashes are the same
        yield lambda http: http.model_copy(update={
            **server.endpoints(), "contact": http.contact or "wikifaces demo (offline)",
            "api_requests_per_second": max(http.api_requests_per_second, LOCAL_API_RATE),
            "download_bytes_per_second": max(http.download_bytes_per_second, LOCAL_BYTE_RATE)})


@contextlib.contextmanager
def standin_http(http: Any, enabled: bool) -> Iterator[Any]:
    with standin(enabled) as rewrite:
        yield rewrite(http)
