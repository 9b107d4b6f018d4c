"""Stages `lsun-import` and `dedup`: LSUN into shards; near-duplicates found with perceptual
hashes (or the paper's autoencoder hash) and an exact multi-index Hamming search."""

from .clusters import KEEP_RULE, components, select_keepers
from .config import DedupConfig, LsunImportConfig
from .hashing import Hashes, hash_images
from .importer import ImportSummary, import_lsun
from .lsun import iter_source
from .search import brute_force_pairs, find_pairs
from .stage import DedupSummary, find_duplicates

__all__ = ["KEEP_RULE", "DedupConfig", "DedupSummary", "Hashes", "ImportSummary", "LsunImportConfig",
           "brute_force_pairs", "components", "find_duplicates", "find_pairs", "hash_images", "import_lsun",
           "iter_source", "select_keepers"]
