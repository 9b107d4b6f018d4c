"""Stages `lsun-import` and `dedup`: LSUN into shards; near-duplicates found with perceptual
hashes (or the paper's autoencoder hash) and an exact multi-index Hamming search.

The names below load on first use, so that `dedup.config` (which the pipeline's registry and
the flows import for their parameters) never pays for numba or faiss."""

from __future__ import annotations

from wikifaces.core.lazy import lazy_exports

_FROM = {
    "KEEP_RULE": "clusters", "components": "clusters", "select_keepers": "clusters",
    "DedupConfig": "config", "DedupStageConfig": "config", "LsunImportConfig": "config",
    "Hashes": "hashing", "hash_images": "hashing",
    "ImportSummary": "importer", "import_lsun": "importer",
    "iter_source": "lsun",
    "brute_force_pairs": "search", "find_pairs": "search",
    "DedupSummary": "stage", "dedup_candidates": "stage", "find_duplicates": "stage",
}

__getattr__ = lazy_exports(__name__, _FROM)
__all__ = sorted(_FROM)
