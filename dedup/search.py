"""All pairs of binary codes within Hamming distance t, exactly, in near-linear time.

Multi-index hashing (Norouzi, Punjani and Fleet, 2012): each code is cut into m substrings.
If two codes differ in at most t bits, then by the pigeonhole principle at least one of their
substrings differs in at most r = floor(t / m) bits. So each code probes, in each substring's
table, every key within r bit flips of its own, and only the codes found there are compared in
full. Each table is direct-addressed (substrings of at most 24 bits) and keeps a copy of the
codes in bucket order, so a probe costs one random memory access and then a contiguous scan.
Probing is compiled with numba and runs in parallel over codes, each thread writing its own
output buffer, and a pair is reported only from the first substring that can find it, so every
pair appears exactly once: the result equals a brute-force scan.

Codes are uint64 arrays of shape (N,) for 64-bit hashes or (N, W) for 64*W bits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator
from itertools import combinations

import numba
import numpy as np

_M1, _M2, _M4 = np.uint64(0x5555555555555555), np.uint64(0x3333333333333333), np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
PROBE_COST = 16.0  # a probe (a random access into a table) against one contiguous comparison, as measured


@numba.njit(inline="always")
def _popcount(x: np.uint64) -> int:
    x = x - ((x >> np.uint64(1)) & _M1)
    x = (x & _M2) + ((x >> np.uint64(2)) & _M2)
    x = (x + (x >> np.uint64(4))) & _M4
    return int((x * _H01) >> np.uint64(56))


@numba.njit(inline="always")
def _distance(codes: np.ndarray, i: int, j: int) -> int:
    d = 0
    for w in range(codes.shape[1]):
        d += _popcount(codes[i, w] ^ codes[j, w])
    return d


@numba.njit(parallel=True, cache=True)
def _probe(codes, words, shifts, masks, orders, sorted_codes, starts, start_off, flips, flip_off, radius, t,
           lo, hi, out, fill, resume, queries, self_join, own, own_radius):
    """Thread k scans queries lo[k] <= i < hi[k], writing into out[k]. When out[k] cannot take all of
    a query's pairs it drops that query's partial output, stops, and sets resume[k] to it. In a
    self-join the queries are the indexed codes and only pairs i < j are reported. With
    own_radius >= 0, a pair (i, j) whose own[i] lies within own_radius of codes[j] is not reported."""
    m = words.shape[0]
    nw = codes.shape[1]
    cap = out.shape[1]
    for k in numba.prange(lo.shape[0]):
        pos = 0
        resume[k] = hi[k]
        for i in range(lo[k], hi[k]):
            start_pos = pos
            overflow = False
            for c in range(m):
                key = (queries[i, words[c]] >> shifts[c]) & masks[c]
                wc = words[c]
                for f in range(flip_off[c], flip_off[c + 1]):
                    base = start_off[c] + np.int64(key ^ flips[f])
                    for p in range(starts[base], starts[base + 1]):
                        # a cheap look at this word first: most candidates fail it
                        if _popcount(queries[i, wc] ^ sorted_codes[c, p]) > t:
                            continue
                        j = orders[c, p]
                        if self_join and j <= i:
                            continue
                        d = 0
                        for w in range(nw):
                            d += _popcount(queries[i, w] ^ codes[j, w])
                        if d > t:
                            continue
                        if own_radius >= 0:
                            d_own = 0
                            for w in range(nw):
                                d_own += _popcount(own[i, w] ^ codes[j, w])
                            if d_own <= own_radius:
                                continue
                        first = True  # report from the first substring that can find this pair
                        for c2 in range(c):
                            x = ((queries[i, words[c2]] ^ codes[j, words[c2]]) >> shifts[c2]) & masks[c2]
                            if _popcount(x) <= radius:
                                first = False
                                break
                        if not first:
                            continue
                        if pos >= cap:
                            overflow = True
                            break
                        out[k, pos, 0] = i
                        out[k, pos, 1] = j
                        out[k, pos, 2] = d
                        pos += 1
                    if overflow:
                        break
                if overflow:
                    break
            if overflow:  # this code's pairs do not fit: drop them and hand the rest back
                pos = start_pos
                resume[k] = i
                break
        fill[k] = pos


@numba.njit(parallel=True, cache=True)
def _brute_count(codes, t, counts):
    n = codes.shape[0]
    for i in numba.prange(n):
        found = 0
        for j in range(i + 1, n):
            if _distance(codes, i, j) <= t:
                found += 1
        counts[i] = found


@numba.njit(parallel=True, cache=True)
def _brute_emit(codes, t, offsets, out):
    n = codes.shape[0]
    for i in numba.prange(n):
        pos = offsets[i]
        for j in range(i + 1, n):
            d = _distance(codes, i, j)
            if d <= t:
                out[pos, 0] = i
                out[pos, 1] = j
                out[pos, 2] = d
                pos += 1


def as_words(codes: np.ndarray) -> np.ndarray:
    codes = np.asarray(codes)
    if codes.dtype != np.uint64:
        raise TypeError(f"codes must be uint64, not {codes.dtype}")
    if codes.ndim == 1:
        codes = codes[:, None]
    if codes.ndim != 2:
        raise ValueError(f"codes must have shape (N,) or (N, W), not {codes.shape}")
    return np.ascontiguousarray(codes)


def plan_chunks(n: int, words: int, threshold: int) -> tuple[int, int]:
    """(substrings per 64-bit word, probe radius) with the least expected work for uniform codes:
    probes are random memory accesses, candidates are contiguous comparisons."""
    best: tuple[float, int, int] | None = None
    for per_word in range(3, 9):
        m = per_word * words
        width = 64 / per_word
        if math.ceil(width) > 24:
            continue
        r = threshold // m
        probes = m * sum(math.comb(math.ceil(width), k) for k in range(r + 1))
        cost = probes * (PROBE_COST + n / 2**width)
        if best is None or cost < best[0]:
            best = (cost, per_word, r)
    assert best is not None
    return best[1], best[2]


def find_pairs(codes: np.ndarray, threshold: int, threads: int | None = None,
               per_word: int | None = None, on_progress: Callable[[int, int], None] | None = None,
               queries: np.ndarray | None = None, exclude: tuple[np.ndarray, int] | None = None) -> np.ndarray:
    """Every pair (i, j, distance) with i < j and distance <= threshold, as an int64 (K, 3) array
    sorted by (i, j). Identical codes are pairs too (distance 0): collapse them first when there
    are many copies, since k copies make k(k-1)/2 pairs. `on_progress(done, n)` is called as
    the codes are probed (in 16 steps), for a progress bar on millions of codes.

    With `queries` (codes of the same width), the pairs are instead (query index q, code index j,
    distance) for every query within the threshold of an indexed code: one index, other probes
    (dedup's re-framed copies of each picture against every picture's own code). `exclude`, with
    queries: (each query's own code, radius): a pair whose query's own code lies within the radius
    of the indexed code is left out (a re-framed copy's pairs that the codes make themselves: most
    of them in a dense cluster)."""
    chunks = list(iter_pairs(codes, threshold, threads, per_word, on_progress, queries, exclude))
    pairs = np.concatenate(chunks) if chunks else np.zeros((0, 3), np.int64)
    order = np.lexsort((pairs[:, 1], pairs[:, 0]))
    return pairs[order]


def iter_pairs(codes: np.ndarray, threshold: int, threads: int | None = None,
               per_word: int | None = None, on_progress: Callable[[int, int], None] | None = None,
               queries: np.ndarray | None = None, exclude: tuple[np.ndarray, int] | None = None
               ) -> Iterator[np.ndarray]:
    """`find_pairs`' pairs in pieces (unsorted int64 (k, 3) arrays of at most one buffer of the
    probe's, ~0.5M rows, unless one code alone has more), for callers that keep only some of them:
    dense clusters make pairs grow with their square, and what this holds does not."""
    c = as_words(codes)
    n, words = c.shape
    if threshold < 0:
        raise ValueError("threshold must be >= 0")
    self_join = queries is None
    q = c if queries is None else as_words(queries)
    if q.shape[1] != words:
        raise ValueError(f"queries have {q.shape[1]} words, codes {words}")
    if exclude is not None and self_join:
        raise ValueError("exclude applies to queries")
    own, own_radius = (as_words(exclude[0]), int(exclude[1])) if exclude is not None else (q[:0], -1)
    if own_radius >= 0 and own.shape != q.shape:
        raise ValueError(f"exclude's codes have shape {own.shape}, the queries {q.shape}")
    if (n < 2 and self_join) or n == 0 or len(q) == 0:
        return
    if per_word is None:
        per_word, radius = plan_chunks(n, words, threshold)
    else:
        radius = threshold // (per_word * words)
    bounds = np.linspace(0, 64, per_word + 1).round().astype(int)
    word_idx, shifts, masks, widths = [], [], [], []
    for w in range(words):
        for a, b in itertools.pairwise(bounds):
            word_idx.append(w)
            shifts.append(a)
            widths.append(b - a)
            masks.append((1 << (b - a)) - 1)
    m = len(word_idx)
    index_type = np.int32 if n < 2**31 else np.int64
    orders = np.empty((m, n), index_type)
    sorted_codes = np.empty((m, n), np.uint64)
    start_off = np.zeros(m + 1, np.int64)
    for k in range(m):
        start_off[k + 1] = start_off[k] + (1 << widths[k]) + 1
    starts = np.empty(int(start_off[-1]), index_type)
    for k in range(m):
        keys = (c[:, word_idx[k]] >> np.uint64(shifts[k])) & np.uint64(masks[k])
        orders[k] = np.argsort(keys, kind="stable")
        sorted_codes[k] = c[orders[k], word_idx[k]]
        counts = np.bincount(keys.astype(np.int64), minlength=1 << widths[k])
        table = starts[start_off[k] : start_off[k + 1]]
        table[0] = 0
        np.cumsum(counts, out=table[1:])
    flips_list, flip_off = [], [0]
    for k in range(m):
        for r in range(radius + 1):
            for bits in combinations(range(widths[k]), r):
                flips_list.append(sum(1 << b for b in bits))
        flip_off.append(len(flips_list))
    args = (c, np.array(word_idx, np.int64), np.array(shifts, np.uint64), np.array(masks, np.uint64), orders,
            sorted_codes, starts, start_off, np.array(flips_list, np.uint64), np.array(flip_off, np.int64),
            radius, threshold)
    # Work is cut into many more ranges than threads, so that dense regions spread out; the ranges
    # are probed in 16 steps of a few ranges each (one parallel call or more a step) to report progress.
    threads = threads or numba.get_num_threads()
    nq = len(q)
    parts = max(1, min(nq, threads * 64))
    edges = np.linspace(0, nq, parts + 1).astype(np.int64)
    # Each call fills one buffer of `cap` rows a range; ranges that fill theirs go on from where
    # they stopped in the next call, and what a call found is handed over at once, so what is
    # held stays a few buffers however many pairs a step makes (a whole step held and joined took
    # ~1.3 GB at twenty copies of the faces rehearsal's hashes). A buffer grows only when a code's
    # own pairs do not fit in it.
    cap, steps = 1 << 16, np.array_split(np.arange(parts), min(parts, 16))
    out = np.empty((max(len(s) for s in steps), cap, 3), np.int64)
    for step in steps:
        lo, hi = edges[step].copy(), edges[step + 1].copy()
        while len(lo):
            fill = np.zeros(len(lo), np.int64)
            resume = np.zeros(len(lo), np.int64)
            _probe(*args, lo, hi, out[: len(lo)], fill, resume, q, self_join, own, own_radius)
            if fill.any():
                yield np.concatenate([out[k, : fill[k]] for k in range(len(lo)) if fill[k]])
            todo = resume < hi
            if (resume[todo] == lo[todo]).any():  # one code's pairs fill a buffer: bigger ones
                cap *= 2
                out = np.empty((out.shape[0], cap, 3), np.int64)
            lo, hi = resume[todo], hi[todo]
        if on_progress is not None:
            on_progress(int(edges[step[-1] + 1]), nq)


def brute_force_pairs(codes: np.ndarray, threshold: int, queries: np.ndarray | None = None) -> np.ndarray:
    """The same pairs by comparing every code with every other: O(N^2), for tests and small sets."""
    c = as_words(codes)
    if queries is not None:
        q = as_words(queries)
        d = np.zeros((len(q), len(c)), np.int64)
        for w in range(c.shape[1]):
            d += np.bitwise_count(q[:, w, None] ^ c[None, :, w])
        qi, j = np.nonzero(d <= threshold)
        return np.stack([qi, j, d[qi, j]], axis=1).astype(np.int64)
    counts = np.zeros(c.shape[0], np.int64)
    _brute_count(c, threshold, counts)
    offsets = np.zeros_like(counts)
    np.cumsum(counts[:-1], out=offsets[1:])
    out = np.empty((int(counts.sum()), 3), np.int64)
    _brute_emit(c, threshold, offsets, out)
    return out
