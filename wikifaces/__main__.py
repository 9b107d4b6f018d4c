"""`python -m wikifaces ...` (and `torchrun ... -m wikifaces train ...`)."""

from wikifaces.cli import app

app()
