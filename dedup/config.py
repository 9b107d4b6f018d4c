"""Configuration of the `lsun-import` and `dedup` stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from wikifaces.core.identity import execution_only

HashMethod = Literal["phash", "dhash", "whash", "ahash", "ae"]


class LsunImportConfig(BaseModel):
    """Read an LSUN category (its LMDB release, or a folder of images) into shards."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Path = Field(description="An LSUN LMDB directory (e.g. bedroom_train_lmdb) or an image folder.")
    category: str = Field(default="bedroom", pattern=r"^[A-Za-z0-9_.-]+$")
    size: Annotated[int | None, Field(ge=8, le=4096)] = 64  # shorter side to this, then centre crop; None: keep
    encoding: Literal["jpeg", "png", "webp"] = "jpeg"
    quality: Annotated[int, Field(ge=1, le=100)] = 95
    limit: Annotated[int | None, Field(ge=1)] = None
    max_pixels: Annotated[int, Field(ge=1)] = 40_000_000
    shard_records: Annotated[int, Field(ge=1)] = 50_000
    workers: Annotated[int | None, Field(ge=1)] = execution_only(None)
    part_size: Annotated[int, Field(ge=100, le=1_000_000)] = execution_only(20_000)  # records a part of fan-out


class DedupConfig(BaseModel):
    """Find near-duplicates in a shard dataset and choose which record of each group to keep."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    method: HashMethod = "phash"
    # Hash alone (verify off): chosen with bench/dedup_quality.py, the highest recall at precision >= 0.99.
    threshold: Annotated[int, Field(ge=0, le=64)] = 5
    # Hash candidates (and the re-framed copies' candidates), then every pair checked on its pixels
    # (dedup/verify.py): chosen with bench/dedup_verify.py, the highest recall (the lower of pairs and
    # clusters) at precision >= 0.99 with no trap pair merged, the fewest candidates on a tie.
    verify: bool = Field(default=True, description="Check every candidate pair on its pixels (alignment, then "
                                                       "tile-wise correlation) instead of trusting the hash.")
    candidate_threshold: Annotated[int, Field(ge=0, le=64)] = Field(
        default=10, description="With verify: hash distance of the candidate pairs checked.")
    probe_threshold: Annotated[int | None, Field(ge=0, le=64)] = Field(
        default=10, description="With verify: also propose pairs where a re-framed copy of one picture (its centre "
                                "or its top, enlarged) is within this distance of the other's hash: crops, borders "
                                "and caption bars. None: the hash of the whole picture alone proposes.")
    min_agreement: Annotated[float, Field(ge=0, le=1)] = Field(
        default=0.75, description="With verify: share of tiles that must agree after alignment.")
    # about 2-3 ms a pair on one core: 2M pairs is ~40 min on 2 cores. Beyond it the closest are checked first.
    max_verified_pairs: Annotated[int, Field(ge=1)] = Field(
        default=2_000_000, description="Verify at most this many candidate pairs, the closest first (by the hash "
                                       "distance that proposed them); the rest stay apart and the summary says so.")
    exact: bool = True  # also group records with identical bytes or pixels
    ae_bits: Annotated[int, Field(ge=64, le=256, multiple_of=64)] = 128
    ae_epochs: Annotated[int, Field(ge=1, le=500)] = 30
    ae_edits: bool = Field(default=True, description="Train the autoencoder to undo near-duplicate edits (shifts, "
                                                     "crops, rotation, caption bars, colour), not only pixel noise.")
    seed: int = 0
    gallery_clusters: Annotated[int, Field(ge=0, le=200)] = 24
    workers: Annotated[int | None, Field(ge=1)] = execution_only(None)
    part_size: Annotated[int, Field(ge=1, le=1_000_000)] = execution_only(20_000)  # records hashed a part


class DedupStageConfig(BaseModel):
    """The dedup stage of a build: which candidate set (the faces, or one LSUN category), and how."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    source: Literal["faces", "lsun"] = "faces"
    category: str = Field(default="bedroom", pattern=r"^[A-Za-z0-9_.-]+$")
    dataset: Path | None = Field(default=None, description="Any shard dataset instead of the build's candidates.")
    dedup: DedupConfig = DedupConfig()
