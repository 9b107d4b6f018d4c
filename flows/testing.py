"""What the tests need from Prefect, kept here so that prefect is imported only under flows/."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.exceptions import ParameterTypeError
from prefect.settings import PREFECT_API_URL
from prefect.testing.utilities import prefect_test_harness


@contextmanager
def harness(startup_timeout: int = 120) -> Iterator[str]:
    """A temporary Prefect server for a test session; yields its API URL."""
    with prefect_test_harness(server_startup_timeout=startup_timeout):
        yield PREFECT_API_URL.value()


__all__ = ["ParameterTypeError", "harness"]
