"""`python -m wikifaces.cli ...`: the same as `wikifaces ...`."""

from . import app

app()
