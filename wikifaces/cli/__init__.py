"""The `wikifaces` command line, an adapter over the pipeline: the stage commands run stages
through the one runner (`wikifaces.pipeline.run_stage`: skipped when unchanged, one receipt),
the others are tools over datasets, runs and the Prefect server.

Split by area: `stages` (the pipeline's stages), `tools` (datasets, trained runs, fixtures) and
`prefect` (server, deployments, builds, the demo). A user's mistake ends every command the same
way: one line `error: ...` and a non-zero exit, from one handler here; a traceback means a bug.
"""

from __future__ import annotations

from . import prefect, stages, tools  # noqa: F401  (each registers its commands on `app`)
from .common import app

__all__ = ["app"]
