"""Phase two of dedup: pairs to clusters (union-find as graph components), and the keep rule."""

from __future__ import annotations

import numba
import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from .search import as_words

KEEP_RULE = "largest resolution (width x height), then lowest key"


def components(n: int, edges: np.ndarray) -> np.ndarray:
    """Component label of each of n nodes, given (i, j, ...) edges."""
    if n == 0:
        return np.zeros(0, np.int64)
    if len(edges) == 0:
        return np.arange(n)
    graph = coo_matrix((np.ones(len(edges), np.int8), (edges[:, 0], edges[:, 1])), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    return labels


@numba.njit(cache=True)
def _root(parent: np.ndarray, x: int) -> int:
    root = x
    while parent[root] != root:
        root = parent[root]
    while parent[x] != root:  # path compression
        nxt = parent[x]
        parent[x] = root
        x = nxt
    return root


@numba.njit(cache=True)
def join(parent: np.ndarray, pairs: np.ndarray) -> None:
    """Union-find: join the two ends of every (i, j, ...) pair in `parent` (each node's parent; a
    root is its own), in place."""
    for k in range(len(pairs)):
        a, b = _root(parent, pairs[k, 0]), _root(parent, pairs[k, 1])
        if a != b:
            parent[a] = b


@numba.njit(cache=True)
def joined(parent: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Whether each pair's two ends are already in one group of `parent`."""
    out = np.zeros(len(pairs), np.bool_)
    for k in range(len(pairs)):
        out[k] = _root(parent, pairs[k, 0]) == _root(parent, pairs[k, 1])
    return out


@numba.njit(cache=True)
def spanning(parent: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """The pairs that would each join two groups, taken in order (Kruskal's forest over the groups
    of `parent`, which is left as it was): the fewest pairs that, all linked, join what all of
    `pairs` would."""
    trial = parent.copy()
    out = np.zeros(len(pairs), np.bool_)
    for k in range(len(pairs)):
        a, b = _root(trial, pairs[k, 0]), _root(trial, pairs[k, 1])
        if a != b:
            trial[a] = b
            out[k] = True
    return out


def hamming(codes: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    c = as_words(codes)
    return np.bitwise_count(c[i] ^ c[j]).sum(axis=1, dtype=np.int64)  # unpacking the bits took 64 bytes a pair


def select_keepers(labels: np.ndarray, members: np.ndarray, pixels: np.ndarray, keys: list[str]) -> dict[int, int]:
    """For every cluster (label shared by 2+ members), the member to keep: the most pixels, then
    the lowest key. `members` are record indices, `keys` their keys; order of input is irrelevant."""
    best: dict[int, tuple[int, str, int]] = {}
    for m, key in zip(members.tolist(), keys, strict=True):
        lab = int(labels[m])
        cand = (-int(pixels[m]), key, m)
        if lab not in best or cand < best[lab]:
            best[lab] = cand
    return {lab: v[2] for lab, v in best.items()}
