"""Stages `lsun-import` and `dedup`: LSUN into shards; near-duplicates found with perceptual
hashes (or the paper's autoencoder hash) and an exact multi-index Hamming search.

The names below load on first use, so that `dedup.config` (which the pipeline's registry and
the flows import for their parameters) never pays for numba or faiss."""

from __future__ import annotations

import importlib
from typing import Any

_FROM = {
    "KEEP_RULE": "clusters", "components": "clusters", "select_keepers": "clusters",
    "DedupConfig": "config", "DedupStageConfig": "config", "LsunImportConfig": "config",
    "Hashes": "hashing", "hash_images": "hashing",
    "ImportSummary": "importer", "import_lsun": "importer",
    "iter_source": "lsun",
    "brute_force_pairs": "search", "find_pairs": "search",
    "DedupSummary": "stage", "dedup_candidates": "stage", "find_duplicates": "stage",
}


def __getattr__(name: str) -> Any:
    if name in _FROM:
        return getattr(importlib.import_module(f".{_FROM[name]}", __name__), name)
    raise AttributeError(f"module 'dedup' has no attribute {name!r}")


__all__ = sorted(_FROM)
