"""Stage `dedup`: exact and near-duplicate groups in a shard dataset, and the keep list.

Order of work: hashes (computed once per method and saved), exact duplicates (identical bytes
or pixels), then candidate pairs from the multi-index search (every pair of codes within the
threshold, identical codes included). With `verify` (the default) the re-framed copies' codes
propose more pairs (crops, borders, caption bars: dedup.hashing.PROBES), each candidate pair is
checked on its pixels (dedup.verify: a near-similarity alignment, then tile-wise correlation),
the closest first within a budget, in parts through the executor, unless links already checked
have joined its two records; only the pairs that pass are links. Without it the hash distance
alone decides. Groups are the components of the links; in each, one record is kept by an
explicit rule (largest resolution, then lowest key). A new threshold never rehashes; the
re-framed copies are hashed only when verification asks for them (2.3-2.9x the hashing time of
the code alone), so turning `verify` on after hashes made without it hashes once more, and
turning it off reuses them.
"""

from __future__ import annotations

import json
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import cv2
import numpy as np
from rich.progress import Progress

from shards import dataset_fingerprint, is_complete, open_dataset
from shards.sheet import write_png
from wikifaces.core.errors import MissingInput
from wikifaces.core.executor import Executor, fan_out, local_executor
from wikifaces.core.files import atomic_open, atomic_write_json
from wikifaces.core.memory import trim_heap
from wikifaces.core.paths import DataRoot
from wikifaces.core.tables import jsonl_line

from .clusters import KEEP_RULE, components, hamming, join, joined, select_keepers, spanning
from .config import DedupConfig, DedupStageConfig
from .distinct import DistinctCount
from .hashing import CORRUPT, PROBES, Hashes, hash_images
from .search import iter_pairs
from .verify import prepare, verify

log = logging.getLogger("wikifaces.dedup")
GALLERY_WIDTH = 8  # members shown of each cluster in gallery.png


@dataclass
class DedupSummary:
    records: int
    kept: int
    removed: int
    clusters: int
    corrupt: int
    out_dir: Path
    counts: dict[str, Any] = field(default_factory=dict)


def default_out_dir(dataset: str | os.PathLike[str]) -> Path:
    """`.../<set>/shards` -> `.../<set>/dedup`."""
    p = Path(dataset)
    return p.parent / "dedup" if p.name == "shards" else p.with_name(p.name + "-dedup")


def wants_probes(config: DedupConfig) -> bool:
    """Whether this run searches with the re-framed copies' codes (and so needs them hashed)."""
    return config.method != "ae" and config.verify and config.probe_threshold is not None


def _hash_stamp(config: DedupConfig, dataset: Path) -> dict[str, Any]:
    want: dict[str, Any] = {"dataset": dataset_fingerprint(dataset), "method": config.method}
    if config.method == "ae":
        want.update(bits=config.ae_bits, epochs=config.ae_epochs, seed=config.seed, edits=config.ae_edits)
    else:  # which re-framed copies were hashed beside each picture (none: the codes alone)
        want["probes"] = [list(p) for p in PROBES] if wants_probes(config) else None
    return want


def hashes_current(config: DedupConfig, dataset: Path, out_dir: Path) -> bool:
    """Whether the saved hashes were made from this dataset with this method (and hold the
    re-framed copies' codes when this run needs them; saved ones serve a run that does not)."""
    path, stamp = out_dir / f"hashes-{config.method}.npz", out_dir / f"hashes-{config.method}.json"
    if not (path.exists() and stamp.exists()):
        return False
    saved, want = json.loads(stamp.read_text()), _hash_stamp(config, dataset)
    if not wants_probes(config) and saved.get("probes"):  # made with the re-framed copies: they serve
        saved["probes"] = None
    return saved == want


def stamp_hashes(config: DedupConfig, dataset: Path, out_dir: Path) -> None:
    atomic_write_json(out_dir / f"hashes-{config.method}.json", _hash_stamp(config, dataset))


def reset_hashes(config: DedupConfig, out_dir: Path) -> None:
    """Forget the saved hashes of this method: the next run hashes every record again."""
    (out_dir / f"hashes-{config.method}.json").unlink(missing_ok=True)


def load_or_hash(config: DedupConfig, dataset: Path, out_dir: Path, progress: bool = True,
                 executor: Executor | None = None) -> Hashes:
    """The saved hashes of this dataset and method, computing them if missing or stale."""
    path = out_dir / f"hashes-{config.method}.npz"
    if hashes_current(config, dataset, out_dir):
        return Hashes.load(path)
    out_dir.mkdir(parents=True, exist_ok=True)
    if config.method == "ae":
        from .ae import ae_hash_images

        hashes = ae_hash_images(dataset, config.ae_bits, config.ae_epochs, config.seed, edits=config.ae_edits)
        hashes.save(path)
    else:
        hashes = hash_images(dataset, out_dir, config.method, config.workers, config.part_size, progress, executor,
                             probes=wants_probes(config))
    stamp_hashes(config, dataset, out_dir)
    return hashes


def exact_edges(hashes: Hashes, valid: np.ndarray) -> np.ndarray:
    """Links from every record to the first with the same bytes, pixels or hash code."""
    edges = []
    idx = np.flatnonzero(valid)
    for column in (hashes.sha_bytes, hashes.sha_pixels):
        _, first, inverse = np.unique(column[idx], return_index=True, return_inverse=True)
        src = idx[first[inverse]]
        mask = src != idx
        edges.append(np.stack([src[mask], idx[mask]], axis=1))
    return np.concatenate(edges) if edges else np.zeros((0, 2), np.int64)


def dedup_candidates(config: DedupStageConfig, root: str | os.PathLike[str] | DataRoot | None = None,
                     progress: bool = True, force: bool = False, executor: Executor | None = None) -> DedupSummary:
    """The stage `dedup` of a build: `find_duplicates` over its candidate set (the faces, or an
    LSUN category) under the data root."""
    return find_duplicates(config.dedup, candidate_dataset(config, root), progress=progress, force=force,
                           executor=executor)


def candidate_dataset(config: DedupStageConfig, root: str | os.PathLike[str] | DataRoot | None = None) -> Path:
    """The candidate shards a build's dedup stage reads."""
    if config.dataset is not None:
        return Path(config.dataset)
    data = root if isinstance(root, DataRoot) else DataRoot.resolve(root)
    return data.candidates(config.source, config.category) / "shards"


def find_duplicates(config: DedupConfig, dataset: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                    progress: bool = True, force: bool = False, executor: Executor | None = None) -> DedupSummary:
    """Hash (or reuse hashes; `force` hashes again), search, cluster, keep; write the outputs under `out_dir`."""
    dataset = Path(dataset)
    out = Path(out_dir) if out_dir is not None else default_out_dir(dataset)
    out.mkdir(parents=True, exist_ok=True)
    if force:
        reset_hashes(config, out)
    if not is_complete(dataset):
        raise MissingInput(f"no dataset at {dataset} (or it is incomplete): run the stage that makes it first")
    hashes = load_or_hash(config, dataset, out, progress, executor)
    n = len(hashes)
    valid = hashes.status != CORRUPT
    links = _links(config, hashes, valid, progress, work=out / "framed-keys.tmp")
    if not config.verify:  # (verification trims once it has made its pairs from the search's)
        trim_heap()  # the search's buffers
    exact, same_code, near_total, framed_total = links.exact, links.same_code, links.near_total, links.framed_total
    ds = open_dataset(dataset)
    agreement = None
    candidates = len(same_code) + near_total + framed_total
    checked, considered, reached = 0, 0, None
    if config.verify:
        v = _verified(config, dataset, links, progress, executor, candidates=candidates)
        agreement, checked, considered, reached = v.agreement, v.checked, v.considered, v.reached
        same_code = same_code[agreement.holds(same_code)]
    near_rec, via = _near_links(links, hashes, agreement)
    del links  # up to 2M candidate pairs of each kind
    agreement = agreement if agreement is not None else PairTable.empty(n)
    labels = components(n, np.concatenate([exact, same_code, near_rec[:, :2]]).astype(np.int64, copy=False))
    # clusters and removed rows go to their files as they are made: a row a removed record (~1.7 kB
    # as Python objects) held for all of them grew with the data; the gallery keeps its few members
    removed_at: list[int] = []
    sizes: Counter[int] = Counter()
    shown: list[dict[str, Any]] = []
    with atomic_open(out / "clusters.jsonl", "w") as cfh, atomic_open(out / "removed.jsonl", "w") as rfh:
        for cluster, rows in _clusters(config, ds, hashes, valid, labels, exact, same_code, near_rec, agreement, via):
            cfh.write(jsonl_line(cluster))
            rfh.writelines(jsonl_line(row) for row in rows)
            removed_at.extend(row["index"] for row in rows)
            sizes[cluster["size"]] += 1
            shown.append({**cluster, "members": cluster["members"][:GALLERY_WIDTH]})
    removed = np.sort(np.array(removed_at, np.int64))
    del removed_at
    keep_mask = valid.copy()
    keep_mask[removed] = False
    kept = np.flatnonzero(keep_mask)
    pairs = np.concatenate([
        np.column_stack([np.sort(exact, axis=1), np.zeros(len(exact), np.int64)]) if len(exact) else
        np.zeros((0, 3), np.int64),
        np.column_stack([np.sort(same_code, axis=1), np.zeros(len(same_code), np.int64)]),
        near_rec,
    ]).astype(np.int64, copy=False)
    with atomic_open(out / "pairs.npy") as fh:
        np.save(fh, pairs)
    with atomic_open(out / "keep.npy") as fh:
        np.save(fh, kept)
    write_png(out / "gallery.png", cluster_gallery(ds, shown, config.gallery_clusters, config.seed))
    ds.close()
    counts = {
        "records": n, "corrupt": int((~valid).sum()), "kept": len(kept), "removed": len(removed),
        "clusters": len(shown), "exact_links": len(exact), "near_pairs": near_total,
        "candidate_pairs": candidates, "framed_pairs": framed_total,
        "framed_links": int(via.holds(near_rec).sum()),
        "verified_pairs": checked, "already_joined_pairs": considered - checked,
        "unverified_pairs": candidates - considered if config.verify else 0,
        "verified_up_to_distance": reached, "verified_links": len(agreement),
        "largest_cluster": max(sizes, default=0),
        "cluster_sizes": dict(sorted(sizes.items())),
    }
    summary = {"method": config.method, "threshold": _radius(config), "verify": config.verify,
               "probe_threshold": config.probe_threshold if config.verify else None,
               "min_agreement": config.min_agreement if config.verify else None, "keep_rule": KEEP_RULE,
               "dataset": str(dataset), **counts}
    atomic_write_json(out / "summary.json", summary)
    return DedupSummary(n, len(kept), len(removed), len(shown), counts["corrupt"], out, counts)


class _Packing:
    """Pairs (distance, i, j[, kind]) packed into one int64 each, distance first, so that sorting
    the keys sorts the pairs closest first, ties in (i, j) order (then kind). Candidate pairs are
    bounded only by `max_verified_pairs` (2M of each kind): three or five int64 columns and their
    lexsorts held ~750 MB at ten copies of the faces rehearsal's hashes, one key a pair ~1/3 of it.
    `n`: how many records (or codes) index `i` and `j` count; `kinds`: how many values `kind` takes."""

    def __init__(self, max_distance: int, n: int, kinds: int = 1) -> None:
        self.n, self.kinds = max(int(n), 1), max(int(kinds), 1)
        if (int(max_distance) + 1) * self.n * self.n * self.kinds >= 2**63:
            raise ValueError(f"{n:,} records at distances up to {max_distance} do not fit one int64 a pair")

    def keys(self, d: np.ndarray, i: np.ndarray, j: np.ndarray, kind: np.ndarray | int = 0) -> np.ndarray:
        key = np.array(np.broadcast_to(d, np.shape(i)), np.int64)  # one array, worked on in place
        key *= self.n
        key += i
        key *= self.n
        key += j
        if self.kinds > 1:
            key *= self.kinds
            key += kind
        return key

    def pair(self, keys: np.ndarray) -> np.ndarray:
        """Each key's pair alone, i * n + j (`_pair_keys`' value for i < j)."""
        return (keys // np.int64(self.kinds)) % np.int64(self.n * self.n)

    def firsts(self, keys: np.ndarray) -> np.ndarray:
        """Of sorted keys, where each pair's first (closest) key is, in key order: each pair once."""
        _, once = np.unique(self.pair(keys), return_index=True)
        once.sort()
        return once

    def unpack(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(distance, i, j, kind) arrays."""
        n = np.int64(self.n)
        rest, kind = np.divmod(keys, np.int64(self.kinds))
        rest, j = np.divmod(rest, n)
        d, i = np.divmod(rest, n)
        return d, i, j, kind


class Links(NamedTuple):
    """What the search proposes (record indices): exact links, same-code links, the near pairs of
    distinct codes and the pairs re-framed copies propose (see `_framed`) as sorted `pack` keys
    (the distance that proposed them, i < j, and kind: 0 near, 1 + the re-framing's index in
    `PROBES`), and how many near and re-framed pairs there were: with verification only the closest
    `max_verified_pairs` of each are kept, since no more are ever checked."""

    exact: np.ndarray
    same_code: np.ndarray
    near: np.ndarray
    framed: np.ndarray
    near_total: int
    framed_total: int
    pack: _Packing


def _near_links(links: Links, hashes: Hashes, agreement: PairTable | None) -> tuple[np.ndarray, PairTable]:
    """The near and re-framed pairs that are links (all, or with verification those in `agreement`)
    as (i, j, distance of their own codes) rows in (i, j) order, and which re-framing proposed
    those that came from one, at what distance (a table of their pairs)."""
    pack, keys = links.pack, np.concatenate([links.near, links.framed])
    if agreement is not None:
        keys = keys[agreement.holds_keys(pack.pair(keys))]
    d, i, j, kind = pack.unpack(keys)
    order = np.lexsort((j, i))
    d, i, j, kind = d[order], i[order], j[order], kind[order]
    framed = kind > 0
    own = d.copy()
    own[framed] = hamming(hashes.codes, i[framed], j[framed])
    via = PairTable(np.stack([i[framed], j[framed]], axis=1), len(hashes), kind[framed] - 1, d[framed])
    return np.stack([i, j, own], axis=1), via


def _links(config: DedupConfig, hashes: Hashes, valid: np.ndarray, progress: bool = False,
           work: Path | None = None) -> Links:
    """1. identical bytes or pixels 2. identical codes 3. codes within the threshold 4. with
    verification, see `_framed`. Dense clusters make pairs grow with their square (a picture in a
    thousand crops: half a million pairs), so with verification each search keeps only the
    closest `max_verified_pairs` pairs as its steps come, the ones verification would check.
    `work`: where the count of distinct re-framed pairs may put its keys (see `_framed`)."""
    exact = exact_edges(hashes, valid) if config.exact else np.zeros((0, 2), np.int64)
    idx = np.flatnonzero(valid)
    uniq, first, inverse = np.unique(hashes.codes[idx], axis=0, return_index=True, return_inverse=True)
    rep = idx[first[inverse.ravel()]]  # each record's first record with its code
    same_code = np.stack([rep, idx], axis=1)
    same_code = same_code[same_code[:, 0] != same_code[:, 1]]
    limit = config.max_verified_pairs if config.verify else None
    u, radius = len(uniq), _radius(config)
    pack = _Packing(max(radius, config.probe_threshold or 0), len(hashes), 1 + len(PROBES))
    by_code = _Packing(radius, u)  # the search's pairs are of codes: the closest are picked in code order
    kept, total = _Closest(limit), 0
    with Progress(disable=not progress or u < 100_000, transient=True) as bar:
        task = bar.add_task(f"searching pairs within distance {radius}", total=u)
        for step in iter_pairs(uniq, radius, on_progress=lambda done, _: bar.update(task, completed=done)):
            total += len(step)
            kept.add(by_code.keys(step[:, 2], step[:, 0], step[:, 1]))  # the search gives i < j
    d, i, j, _ = by_code.unpack(kept.result())
    a, b = idx[first[i]], idx[first[j]]  # each code's first record
    near = pack.keys(d, np.minimum(a, b), np.maximum(a, b))
    near.sort()
    del d, i, j, a, b  # not held through the re-framed search
    framed, framed_total = _framed(config, hashes, idx, uniq, idx[first], rep, pack, progress, work)
    return Links(exact, same_code, near, framed, total, framed_total, pack)


class _Closest:
    """The closest `limit` of a search's packed pairs (`_Packing` keys) as its steps come; all of
    them when `limit` is None. `reduce` picks the closest from sorted keys (the first `limit`, by
    default). Once `limit` are held, a key beyond the farthest of them is dropped on arrival, since
    it cannot displace one: what is held stays near 1.5 `limit` keys however many pairs a dense
    cluster makes."""

    def __init__(self, limit: int | None, reduce: Callable[[np.ndarray], np.ndarray] | None = None) -> None:
        self.limit, self.reduce = limit, reduce or (lambda keys: keys[:limit])
        self.parts, self.held, self.cutoff = [np.zeros(0, np.int64)], 0, None

    def add(self, keys: np.ndarray) -> None:
        if self.cutoff is not None:
            keys = keys[keys <= self.cutoff]
        if len(keys):
            self.parts.append(keys)
            self.held += len(keys)
        if self.limit and self.held > 1.5 * self.limit:
            keys = self.result()
            self.parts, self.held = [keys], len(keys)
            if len(keys) >= self.limit:
                self.cutoff = int(keys[self.limit - 1])

    def result(self) -> np.ndarray:
        """The keys kept, sorted (closest first)."""
        keys = np.concatenate(self.parts)
        self.parts = []  # not held twice while reduced
        keys.sort()
        return self.reduce(keys)


def _framed(config: DedupConfig, hashes: Hashes, idx: np.ndarray, uniq: np.ndarray, holder: np.ndarray,
            rep: np.ndarray, pack: _Packing, progress: bool = False, work: Path | None = None
            ) -> tuple[np.ndarray, int]:
    """With verification, the candidate pairs proposed by a re-framed copy as sorted `pack` keys
    (distance of the re-framed copy to the other's code, i < j, 1 + which re-framing), each pair
    once (its closest re-framing, the first of `PROBES` on a tie) and none the codes propose
    themselves (own distance within the radius), the closest `max_verified_pairs` of them (ties
    in (i, j) order); and how many such pairs there were. `idx` are
    the valid records, `uniq` their distinct codes, `holder` each code's first record, `rep` each
    valid record's: the pairs are between first records, as the near pairs are. The distinct pairs
    are counted in bounded memory (`DistinctCount`, its keys beyond 2M in `work`): they grow with
    the square of a cluster."""
    if not config.verify or config.probe_threshold is None or hashes.probes is None or not len(idx):
        return np.zeros(0, np.int64), 0
    n, limit, radius = len(hashes), config.max_verified_pairs, _radius(config)

    kept, distinct = _Closest(limit, lambda keys: keys[pack.firsts(keys)[:limit]]), DistinctCount(work)
    with Progress(disable=not progress or len(idx) < 100_000, transient=True) as bar:
        for k, (name, _, _) in enumerate(PROBES):
            task = bar.add_task(f"searching re-framed copies ({name}) within {config.probe_threshold}",
                                total=len(idx))
            # most proposals in a dense cluster are pairs the codes make themselves (within the radius):
            # the search leaves them out (40M of 41M for one re-framing at ten copies of the rehearsal's)
            for q in iter_pairs(uniq, config.probe_threshold, queries=hashes.probes[idx, k],
                                exclude=(hashes.codes[idx], radius),
                                on_progress=lambda done, _, t=task: bar.update(t, completed=done)):
                a, b = rep[q[:, 0]], holder[q[:, 1]]  # own codes beyond the radius, so a != b: the search saw to it
                lo, hi = np.minimum(a, b), np.maximum(a, b)
                distinct.add(lo * n + hi)
                kept.add(pack.keys(q[:, 2], lo, hi, 1 + k))
    return kept.result(), distinct.count()


def _pair_keys(rows: np.ndarray, n: int) -> np.ndarray:
    """One int64 per pair of `rows` (record indices below `n` in its first two columns), the
    same whichever way round: (min, max) packed."""
    ends = np.sort(rows[:, :2], axis=1)
    return ends[:, 0] * n + ends[:, 1]


class PairTable:
    """Values for pairs of records, in columns: the pairs' keys (`_pair_keys`, sorted) and one
    array a value. Verification's agreements and the re-framings that proposed pairs are kept
    here, ~24 bytes a pair, where dicts of tuples took ~300: candidate pairs grow with the square
    of cluster size and are bounded only by `max_verified_pairs` (2M)."""

    def __init__(self, pairs: np.ndarray, n: int, *values: np.ndarray) -> None:
        keys = _pair_keys(np.asarray(pairs, np.int64), max(n, 1))
        order = np.argsort(keys, kind="stable")
        self.n, self.keys = max(n, 1), keys[order]
        self.values = [np.asarray(v)[order] for v in values]

    @classmethod
    def empty(cls, n: int) -> PairTable:
        return cls(np.zeros((0, 2), np.int64), n, np.zeros(0))

    def __len__(self) -> int:
        return len(self.keys)

    def _find(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._find_keys(_pair_keys(np.asarray(rows, np.int64), self.n))

    def _find_keys(self, key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        pos = np.minimum(np.searchsorted(self.keys, key), max(len(self.keys) - 1, 0))
        return pos, (self.keys[pos] == key) if len(self.keys) else np.zeros(len(key), bool)

    def holds(self, rows: np.ndarray) -> np.ndarray:
        """Whether each pair of `rows` (its first two columns, either way round) is in the table."""
        return self._find(rows)[1]

    def holds_keys(self, keys: np.ndarray) -> np.ndarray:
        """Whether each pair given by its key (`_pair_keys`: min * n + max) is in the table."""
        return self._find_keys(keys)[1]

    def get(self, a: int, b: int) -> tuple[Any, ...] | None:
        """The values of the pair (a, b), either way round, or None."""
        pos, found = self._find(np.array([[a, b]]))
        return tuple(v[pos[0]].item() for v in self.values) if found[0] else None

    def column(self, rows: np.ndarray, value: int = 0) -> np.ndarray:
        """One value of each pair of `rows`, every one of which must be in the table."""
        pos, found = self._find(rows)
        if not found.all():
            raise KeyError(f"{int((~found).sum())} pairs are not in the table")
        return self.values[value][pos]


def _radius(config: DedupConfig) -> int:
    return config.candidate_threshold if config.verify else config.threshold


def _verified(config: DedupConfig, dataset: Path, links: Links, progress: bool, executor: Executor | None = None,
              *, candidates: int) -> Verified:
    """The candidate pairs that pass verification and what it did (see `Verified`). At most
    `max_verified_pairs` candidates are considered, the closest first (by the distance that proposed
    them, ties in (i, j) order): a bounded run whose summary says how far it got, rather than a
    refusal or a run of days. `candidates`: how many the search found (it hands over only the closest).

    A pair whose two records are already in one group (joined by pairs that passed) is not
    checked, since it cannot change a group: in a dense cluster (a picture in a thousand crops)
    the candidates grow with the square of its size, the pairs that join it with its size (the
    10,000-people rehearsal: 176,027 candidates, 9,957 checked). To check many at once, the
    checks go in rounds: each checks the spanning forest of the pairs left (closest first, the
    first pair to join each two groups), links those that pass and drops every pair left whose
    records they joined. The groups are those of checking every pair. A forest of fewer than
    `FAN_OUT_PAIRS` is filled up with the closest pairs left: two groups that are not duplicates
    but have many close pairs (different photographs alike in their hashes) failed one pair a
    round, 1,264 rounds of ~13 pairs on one core (40 of a 68 s stage over 9,400 records, where
    the first round leaves too few to fill; over 94,000, 23 rounds and 405 s of verification
    instead of ~670), while `FILL_FROM` pairs are left (a small set still checks only what joins
    its groups: filling from 5,000 at 9,400 records checked 21,323 pairs, not 17,767). A large
    round is checked in parts through the executor (local processes, or a Dask cluster), a
    small one here."""
    pack = links.pack
    same = links.same_code
    keys = np.concatenate([pack.keys(0, np.minimum(same[:, 0], same[:, 1]), np.maximum(same[:, 0], same[:, 1])),
                           links.near, links.framed])  # one a pair: sorted, closest first
    keys.sort()
    keys = keys[: config.max_verified_pairs]
    reached = int(pack.unpack(keys[-1:])[0][0]) if len(keys) else None
    if candidates > config.max_verified_pairs:
        log.warning("%s candidate pairs: verifying the %s closest (hash distance up to %s); the rest stay apart "
                    "(max_verified_pairs)", f"{candidates:,}", f"{config.max_verified_pairs:,}", reached)
    pairs = pack.pair(keys[pack.firsts(keys)])  # each pair once (i * n + j), in the order of its closest candidate
    del keys
    todo = np.empty((len(pairs), 2), np.int64)
    np.divmod(pairs, np.int64(pack.n), out=(todo[:, 0], todo[:, 1]))
    del pairs
    trim_heap()  # the sort's and search's temporaries (~150 MB at 2M candidates) leave the RSS
    records = pack.n
    considered = len(todo)
    group = np.arange(records, dtype=np.int64)  # union-find: each record's parent
    done: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    prepared: OrderedDict[int, np.ndarray] = OrderedDict()  # kept between this process's rounds
    with ExitStack() as stack:
        if executor is None:  # one pool of workers for every round that fans out
            executor = stack.enter_context(local_executor(config.workers))
        bar = stack.enter_context(Progress(disable=not progress or considered < 1000, transient=True))
        task = bar.add_task("verifying candidate pairs", total=considered)
        while len(todo):
            bar.update(task, completed=considered - len(todo))
            forest = spanning(group, todo)
            if len(todo) >= FILL_FROM and (thin := FAN_OUT_PAIRS - int(forest.sum())) > 0:
                # a thin round with many pairs left: filled up with the closest of them
                forest[np.flatnonzero(~forest)[:thin]] = True
            batch, todo = todo[forest], todo[~forest]
            batch = batch[np.lexsort((batch[:, 1], batch[:, 0]))]  # index order: a part reads nearby records
            got = _check(config, dataset, batch, executor, prepared, lambda k: bar.advance(task, k))
            join(group, batch[got >= config.min_agreement])
            done.append(batch)
            scores.append(got)
            todo = todo[~joined(group, todo)]
    checked = np.concatenate(done) if done else np.zeros((0, 2), np.int64)
    score = np.concatenate(scores) if scores else np.zeros(0)
    linked = score >= config.min_agreement
    agreement = PairTable(checked[linked], records, score[linked])  # the pairs that pass, and only those
    return Verified(agreement, len(checked), considered, reached)


class Verified(NamedTuple):
    """What verification linked and did: the pairs that passed, with their agreement, how many pairs
    it checked, how many it considered (the closest `max_verified_pairs` candidates, each pair
    once: those not checked had their records already joined) and the hash distance up to which
    it considered them."""

    agreement: PairTable
    checked: int
    considered: int
    reached: int | None


def _check(config: DedupConfig, dataset: Path, pairs: np.ndarray, executor: Executor | None,
           prepared: OrderedDict[int, np.ndarray], advance: Callable[[int], Any]) -> np.ndarray:
    """The agreement of each pair: here when they are few, else in parts through the executor."""
    if len(pairs) < FAN_OUT_PAIRS:
        return verify_part((0, pairs), str(dataset), lambda: advance(1), prepared)[1]
    count = max(-(-len(pairs) // VERIFY_PART), config.workers or os.cpu_count() or 1)
    size = -(-len(pairs) // count)
    parts = [pairs[a : a + size] for a in range(0, len(pairs), size)]
    got: dict[int, np.ndarray] = {}

    def landed(result: tuple[int, np.ndarray]) -> None:
        got[result[0]] = result[1]
        advance(len(result[1]))

    fan_out(executor, verify_part, list(enumerate(parts)), str(dataset), on_result=landed,
            label="verifying candidate pairs", progress=False, workers=config.workers)
    return np.concatenate([got[k] for k in range(len(parts))])


VERIFY_PART = 50_000  # candidate pairs a part of fan-out at most (~2-3 minutes on one core)
FAN_OUT_PAIRS = 5_000  # a round of fewer is checked in this process (~15 s on one core; workers take ~2 s to start)
FILL_FROM = 20_000  # pairs left from which a thin round is filled up to FAN_OUT_PAIRS (see `_verified`)
# Pictures a part keeps prepared (4 kB each: 16 MB at most). A round checks a spanning forest (each
# record in one or two pairs) in index order: on the 10,000-people rehearsal's first round (9,406
# pairs over 9,429 records, two parts) 4,096 prepare 9,857 pictures, 32,768 9,827, none 18,812.
# It held 32,768 (128 MB a worker) when every pair of a dense cluster was checked, and 200,000 before.
PREPARED_CACHE = 4_096
# Pictures a part reads at random between unmapping them. A random read of a just-written shard
# maps a whole page-cache folio (~1 MB seen here), not one record's pages: 6,000 random pairs over
# 60,000 fresh 128 px records held 683 MB of shard pages with a window of 1,024 (PASS_WINDOW, a
# sequential pass's), 72 with 64, 23 with 16, 24 s each; mapping again costs well under a ms.
RANDOM_WINDOW = 16


def verify_part(part: tuple[int, np.ndarray], dataset: str, tick: Any = None,
                cache: OrderedDict[int, np.ndarray] | None = None) -> tuple[int, np.ndarray]:
    """(part number, agreement of each (i, j) pair of the part), reading the pictures from the
    dataset: a part of fan-out. Pictures are prepared once each (64 px grey, 4 kB) while their
    pairs are checked, in index order; `cache` (least recently used first) keeps them for the
    caller's next part."""
    number, pairs = part
    cv2.setNumThreads(1)
    ds = open_dataset(dataset)
    cache = OrderedDict() if cache is None else cache

    read = 0

    def prepared(x: int) -> np.ndarray:
        nonlocal read
        if (img := cache.get(x)) is not None:
            cache.move_to_end(x)
            return img
        img = cache[x] = prepare(ds[x].image).astype(np.uint8)  # ~1 ms (a 128 px PNG), verify ~3
        if len(cache) > PREPARED_CACHE:
            cache.popitem(last=False)
        read += 1
        if read % RANDOM_WINDOW == 0:  # unmap what was read: a dense cluster's part reads the whole set
            ds.release()
        return img

    out = np.zeros(len(pairs), np.float64)
    try:
        for k, (i, j) in enumerate(pairs.tolist()):
            a, b = prepared(i), prepared(j)
            out[k] = verify(a.astype(np.float32), b.astype(np.float32), min_agreement=0.0).agreement
            if tick is not None:
                tick()
    finally:
        ds.close()
    return number, out


def _clusters(config: DedupConfig, ds: Any, hashes: Hashes, valid: np.ndarray, labels: np.ndarray,
              exact: np.ndarray, same_code: np.ndarray | None = None, near_rec: np.ndarray | None = None,
              agreement: PairTable | None = None, via: PairTable | None = None
              ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Each cluster with its members, and a row for each record it removes: in each group one
    record is kept by the explicit rule (largest, then lowest key), the others removed with the
    reason. One cluster at a time, for the caller to write as they come."""
    n = len(hashes)
    sizes = np.bincount(labels, minlength=n) if n else np.zeros(0, np.int64)
    in_cluster = np.flatnonzero(valid & (sizes[labels] > 1))
    clustered = in_cluster.tolist()
    keys = [meta["key"] for _, _, meta in ds.iter_at(clustered, images=False)]  # unmapped as it goes
    key_of = dict(zip(clustered, keys, strict=True))
    keepers = select_keepers(labels, in_cluster, hashes.pixels, keys)
    exact_set = set(map(tuple, np.sort(exact, axis=1).tolist())) if len(exact) else set()
    link = _strongest_links(same_code, near_rec, agreement if agreement is not None else PairTable.empty(n))

    by_label: dict[int, list[int]] = {}
    for i in clustered:
        by_label.setdefault(int(labels[i]), []).append(i)
    for cid, (lab, members) in enumerate(sorted(by_label.items(), key=lambda kv: keepers[kv[0]])):
        keep = keepers[lab]
        removed_rows: list[dict[str, Any]] = []
        others = np.array([m for m in members if m != keep], np.int64)
        dist = hamming(hashes.codes, np.full(len(others), keep), others) if len(others) else np.zeros(0, np.int64)
        entries = [{"index": keep, "key": key_of[keep], "pixels": int(hashes.pixels[keep]), "distance": 0,
                    "kept": True}]
        for m, d in sorted(zip(others.tolist(), dist.tolist(), strict=True), key=lambda x: (x[1], key_of[x[0]])):
            is_exact = (min(m, keep), max(m, keep)) in exact_set
            other, link_d, agree = link.get(m, (None, None, None))
            entries.append({"index": m, "key": key_of[m], "pixels": int(hashes.pixels[m]), "distance": d,
                            "agreement": agree, "kept": False})
            why = (f"identical to {key_of[keep]}" if is_exact else f"{config.method} distance {d} to {key_of[keep]}")
            framing = None if other is None or via is None else via.get(m, other)
            if agree is not None and not is_exact:
                found = "" if framing is None else \
                    f", proposed by its {PROBES[framing[0]][0]} re-framed at distance {framing[1]}"
                why += f"; verified against {key_of[other]} ({agree:.0%} of tiles agree{found})"
            removed_rows.append({
                "index": m, "key": key_of[m], "status": "duplicate", "cluster": cid,
                "reason": why + f" (cluster {cid}, kept by rule)",
                "keep_index": keep, "keep_key": key_of[keep], "distance": d, "exact": is_exact,
                "link": None if other is None else {
                    "index": other, "distance": link_d, "agreement": agree,
                    "reframed": None if framing is None else {"as": PROBES[framing[0]][0], "distance": framing[1]}},
            })
        agrees = [e["agreement"] for e in entries if e.get("agreement") is not None]
        yield ({"cluster": cid, "size": len(members), "keep": keep, "keep_key": key_of[keep],
                "max_distance": int(dist.max()) if len(dist) else 0,
                "min_agreement": min(agrees) if agrees else None, "members": entries}, removed_rows)


def _strongest_links(same_code: np.ndarray | None, near_rec: np.ndarray | None,
                     agreement: PairTable) -> dict[int, tuple[int, int, float]]:
    """Per record, the verified link that put it in its group with the best agreement:
    (the other record, hash distance, agreement); of equals, the first link listed (same-code
    links, then near pairs). Empty without verification. In columns: a record is a dict entry,
    a link is not."""
    parts = []
    if same_code is not None and len(same_code):
        parts.append(np.column_stack([same_code[:, :2], np.zeros(len(same_code), np.int64)]))
    if near_rec is not None and len(near_rec):
        parts.append(near_rec[:, :3])
    if not len(agreement) or not parts:
        return {}
    rows = (np.concatenate(parts) if len(parts) > 1 else parts[0]).astype(np.int64, copy=False)
    score = agreement.column(rows[:, :2])
    x = rows[:, :2].ravel()  # each link both ways round, in the order listed: a0 -> b0, b0 -> a0, a1 -> b1, ...
    order = np.lexsort((-np.repeat(score, 2), x))  # stable: per record the best score, then the first listed
    xs = x[order]
    best = order[np.r_[True, xs[1:] != xs[:-1]]]
    link, way = np.divmod(best, 2)
    return dict(zip(x[best].tolist(), zip(rows[link, 1 - way].tolist(), rows[link, 2].tolist(),
                                          score[link].tolist(), strict=True), strict=True))


def cluster_gallery(ds: Any, clusters: list[dict[str, Any]], limit: int, seed: int = 0, tile: int = 96,
                    per_row: int = GALLERY_WIDTH) -> np.ndarray:
    """One row per cluster: the kept record framed green, then the removed ones framed red with
    their distance (the first `per_row` of its members). Half the rows are the clusters with the
    largest distances (where mistakes hide), half a random sample."""
    if not clusters or limit == 0:
        return np.full((tile, tile * 4, 3), 255, np.uint8)
    widest = sorted(clusters, key=lambda c: -c["max_distance"])[: limit // 2]
    rest = [c for c in clusters if c not in widest]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(rest), min(len(rest), limit - len(widest)), replace=False) if rest else []
    sample = [rest[k] for k in picks]
    chosen = widest + sorted(sample, key=lambda c: c["cluster"])
    width = min(per_row, max(len(c["members"]) for c in chosen))
    rows = []
    for c in chosen:
        row = np.full((tile + 18, width * (tile + 4) + 12, 3), 255, np.uint8)
        for k, m in enumerate(c["members"][:width]):
            img = ds[m["index"]].image
            s = tile / max(img.shape[:2])
            img = cv2.resize(img, (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s))),
                             interpolation=cv2.INTER_AREA)
            x0 = k * (tile + 4) + 2
            row[2 : 2 + img.shape[0], x0 : x0 + img.shape[1]] = img
            colour = (0, 160, 0) if m["kept"] else (200, 0, 0)
            cv2.rectangle(row, (x0 - 2, 0), (x0 + tile + 1, tile + 3), colour, 2)
            label = "kept" if m["kept"] else f"d={m['distance']}" + (
                f" v={m['agreement']:.2f}" if m.get("agreement") is not None else "")
            cv2.putText(row, label, (x0 + 2, tile + 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)
        rows.append(row)
    # several columns of cluster rows when clusters are small, so the picture is not a long strip
    cols = max(1, min(4, 1200 // rows[0].shape[1]))
    per_col = -(-len(rows) // cols)
    blank = np.full_like(rows[0], 255)
    columns = [np.concatenate((rows[k * per_col : (k + 1) * per_col] + [blank] * per_col)[:per_col], axis=0)
               for k in range(cols)]
    return np.concatenate(columns, axis=1)
