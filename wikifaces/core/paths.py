"""The data root and its layout (DESIGN.md, "Data root").

The root is `--root`, else `$WIKIFACES_ROOT`, else `./data`. Paths under it are fixed
names chosen here: nothing scraped ever becomes part of a path.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import BadConfig

ROOT_ENV = "WIKIFACES_ROOT"


def default_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or "data")


@dataclass(frozen=True)
class DataRoot:
    """Named locations under one data root."""

    root: Path

    @classmethod
    def resolve(cls, root: str | os.PathLike[str] | None = None) -> DataRoot:
        return cls(Path(root) if root is not None else default_root())

    @property
    def raw_wikipedia(self) -> Path:
        return self.root / "raw" / "wikipedia"

    @property
    def image_store(self) -> Path:
        return self.raw_wikipedia / "store"

    @property
    def faces(self) -> Path:
        return self.root / "interim" / "faces"

    def lsun(self, category: str) -> Path:
        return self.root / "interim" / "lsun" / _safe_name(category)

    def candidates(self, source: str, category: str) -> Path:
        """The interim folder of a candidate set: the identity-checked faces, or one LSUN category."""
        return self.faces / "checked" if source == "faces" else self.lsun(category)

    def dedup(self, set_name: str) -> Path:
        return self.root / "interim" / _safe_name(set_name) / "dedup"

    def processed(self, dataset: str) -> Path:
        return self.root / "processed" / _safe_name(dataset)

    @property
    def runs(self) -> Path:
        return self.root / "runs"


def _safe_name(name: str) -> str:
    """Dataset, set and category names come from configuration, never from scraped text;
    still, refuse anything that could escape its parent folder."""
    ok = name and all(c.isalnum() or c in "-_." for c in name) and name not in (".", "..")
    if not ok:
        raise BadConfig(
            f"invalid name {name!r}: use letters, digits, '-', '_' and '.', as in 'faces-64'"
        )
    return name
