"""One type for what the user must fix: a missing input, a stage not yet run, a bad option, a
server that keeps failing. The CLI turns it into one line `error: ...` and a non-zero exit,
in one place; anything else is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """A mistake or condition the user can fix; its message says what and how, in one line."""


class MissingInput(UserError, FileNotFoundError):
    """An input of a stage is not there (usually: the stage before has not run)."""


class BadConfig(UserError, ValueError):
    """A setting that cannot work (no contact for the real sites, a GPU asked for where there is none)."""


class UnsafeInput(UserError, ValueError):
    """A file refused because opening it could run code or harm the machine."""
