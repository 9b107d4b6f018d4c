"""Dedup: LSUN import, perceptual hashes, the exact multi-index search, clusters and keep rule."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import cv2
import lmdb
import numpy as np
import pytest
from typer.testing import CliRunner

from dedup import (
    DedupConfig,
    LsunImportConfig,
    brute_force_pairs,
    find_duplicates,
    find_pairs,
    hash_images,
    import_lsun,
    iter_source,
    select_keepers,
)
from dedup.clusters import hamming
from dedup.hashing import Hashes
from shards import ShardWriter, encode_image, open_dataset, verify_dataset
from shards.format import sniff_encoding
from wikifaces.cli import app
from wikifaces.core.imaging import centre_square
from wikifaces.core.tables import read_jsonl
from wikifaces.fixtures.lsun import write_lsun_lmdb
from wikifaces.fixtures.samples import random_crops

from .conftest import REPO


def planted_codes(n: int, t: int, words: int = 1, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 2**64 - 1, (n, words), dtype=np.uint64, endpoint=True)
    centres = codes[rng.integers(0, n, n // 200)]  # some clustering, as real hashes have
    members = rng.choice(n, n // 10, replace=False)
    noise = np.packbits(rng.random((len(members), 64 * words)) < 0.1, axis=1).view(">u8").astype(np.uint64)
    codes[members] = centres[rng.integers(0, len(centres), len(members))] ^ noise.reshape(len(members), words)
    src, dst = rng.integers(0, n, n // 20), rng.choice(n, n // 20, replace=False)
    for s, d in zip(src, dst, strict=True):
        c = codes[s].copy()
        for b in rng.choice(64 * words, rng.integers(0, t + 2), replace=False):
            c[b // 64] ^= np.uint64(1) << np.uint64(b % 64)
        codes[d] = c
    return codes if words > 1 else codes[:, 0]


@pytest.mark.parametrize("t", [0, 3, 5, 8, 12])
def test_index_pairs_equal_brute_force_on_20k(t):
    codes = planted_codes(20_000, t)
    got, want = find_pairs(codes, t), brute_force_pairs(codes, t)
    assert len(want) > 400  # the planted pairs are there (at t = 0, the unflipped half)
    np.testing.assert_array_equal(got, want)


def test_index_pairs_equal_brute_force_for_128_bit_codes():
    codes = planted_codes(20_000, 14, words=2)
    np.testing.assert_array_equal(find_pairs(codes, 14), brute_force_pairs(codes, 14))


@pytest.mark.parametrize("t", [0, 6, 10])
def test_query_pairs_equal_brute_force(t):
    codes = planted_codes(20_000, t)
    rng = np.random.default_rng(1)
    queries = codes[rng.choice(len(codes), 3000, replace=False)].copy()  # near copies of indexed codes
    flips = rng.integers(0, 64, (3000, 3))
    for k in range(3):  # 0 to 3 bits flipped
        queries ^= (np.uint64(1) << flips[:, k].astype(np.uint64)) * (rng.random(3000) < 0.5).astype(np.uint64)
    queries[:500] = rng.integers(0, 2**63, 500, dtype=np.int64).astype(np.uint64)  # and strangers
    got = find_pairs(codes, t, queries=queries)
    want = brute_force_pairs(codes, t, queries=queries)
    assert len(want) > 300
    np.testing.assert_array_equal(got, want)  # every (query, code) pair, sorted, none twice
    # a re-framed copy's pairs that its picture's own code makes anyway are left out in the search
    own = codes[rng.choice(len(codes), 3000, replace=False)].copy()
    own[1000:] = queries[1000:]  # two thirds of the queries are their pictures' own codes
    radius = max(1, t // 2)
    mine = hamming(np.concatenate([own, codes]), want[:, 0], len(own) + want[:, 1]) > radius
    assert 0 < mine.sum() < len(want)
    np.testing.assert_array_equal(find_pairs(codes, t, queries=queries, exclude=(own, radius)), want[mine])


def test_a_dense_cluster_is_handed_over_in_pieces_of_one_buffer():
    """A picture in 6,000 crops makes 18M pairs; a step of the search held and joined all it found
    (1.3 GB at twenty copies of the faces rehearsal's hashes). Pieces are now one call's buffers at
    most (8 ranges a step here, 65,536 rows each), and a code whose own pairs overflow a buffer
    still gets them all (the buffer grows)."""
    from dedup.search import iter_pairs

    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, 1, dtype=np.int64).astype(np.uint64)
    others = rng.integers(0, 2**63, 2000, dtype=np.int64).astype(np.uint64)
    codes = np.concatenate([np.repeat(base, 6000), others])
    pieces = [len(p) for p in iter_pairs(codes, 5, threads=2)]
    extra = brute_force_pairs(np.concatenate([base, others]), 5)  # pairs the base copies or strangers make
    want = 6000 * 5999 // 2 + int((extra[:, 0] == 0).sum()) * 6000 + int((extra[:, 0] > 0).sum())
    assert sum(pieces) == want and want > 17_000_000
    assert max(pieces) <= 8 * 2**16, max(pieces)
    queries = np.concatenate([base, others[:50]])  # one query with 70,000 pairs: more than a buffer
    denser = np.concatenate([codes, np.repeat(base, 64_000)])
    got = find_pairs(denser, 5, queries=queries, threads=2)
    assert int((got[:, 0] == 0).sum()) == 70_000
    np.testing.assert_array_equal(got, brute_force_pairs(denser, 5, queries=queries))


def test_search_reports_progress_up_to_every_code():
    codes = planted_codes(20_000, 5)
    seen: list[tuple[int, int]] = []
    got = find_pairs(codes, 5, on_progress=lambda done, n: seen.append((done, n)))
    np.testing.assert_array_equal(got, brute_force_pairs(codes, 5))  # reporting changes no result
    assert len(seen) == 16 and all(n == 20_000 for _, n in seen)
    done = [d for d, _ in seen]
    assert done == sorted(done) and done[0] > 0 and done[-1] == 20_000


def test_search_survives_a_dense_cluster():
    rng = np.random.default_rng(3)
    base = np.uint64(0x0123456789ABCDEF)
    dense = np.array([base ^ (np.uint64(1) << np.uint64(b)) for b in rng.integers(0, 64, 2500)], np.uint64)
    codes = np.concatenate([dense, rng.integers(0, 2**63, 3000, dtype=np.int64).astype(np.uint64)])
    got = find_pairs(codes, 4)
    assert len(got) >= 2500 * 2499 // 2  # every pair in the cluster, more than one output buffer holds
    np.testing.assert_array_equal(got, brute_force_pairs(codes, 4))


def test_keep_rule_is_deterministic_whatever_the_order():
    labels = np.array([0, 0, 0, 1, 1, 2])
    pixels = np.array([100, 400, 400, 50, 50, 10])
    keys = ["c", "b", "a", "z", "y", "solo"]
    want = select_keepers(labels, np.arange(6), pixels, keys)
    assert want == {0: 2, 1: 4, 2: 5}  # most pixels, then lowest key
    rng = np.random.default_rng(0)
    for _ in range(20):
        order = rng.permutation(6)
        assert select_keepers(labels, order, pixels, [keys[i] for i in order]) == want


@pytest.mark.parametrize("fmt", ["webp", "jpeg"])
def test_lsun_lmdb_round_trip(tmp_path, fmt):
    src = tmp_path / "bedroom_train_lmdb"
    planted = write_lsun_lmdb(src, 120, size=128, fmt=fmt, seed=1)
    assert (src / "data.mdb").exists() and planted
    records = list(iter_source(src))
    assert len(records) == 120 and [k for k, _ in records] == sorted(k for k, _ in records)
    assert all(len(k) == 40 and int(k, 16) >= 0 for k, _ in records)
    assert {sniff_encoding(v) for _, v in records} == {fmt}
    assert [k for k, _ in iter_source(src, skip=100)] == [k for k, _ in records[100:]]
    s = import_lsun(LsunImportConfig(source=src, size=64, workers=2), tmp_path / "root", progress=False)
    ds = open_dataset(s.output)
    assert len(ds) == 120 and ds.manifest.image.height == 64 and ds.manifest.image.encoding == "jpeg"
    assert [m["key"] for m in ds.iter_meta()] == [k for k, _ in records]
    assert ds.read_meta(0)["source_format"] == fmt and ds[0].image.shape == (64, 64, 3)
    # without normalisation, bytes of the dataset's encoding are kept as they are
    keep = import_lsun(LsunImportConfig(source=src, size=None, encoding=fmt, category="raw"), tmp_path / "root",
                       progress=False)
    raw = open_dataset(keep.output)
    assert raw.read_bytes(5) == records[5][1] and raw.manifest.image.height is None


def test_the_lsun_source_is_read_in_windows_and_unmapped_as_it_goes(tmp_path, monkeypatch):
    """The import's pass over the source LMDB held every page it read in its RSS (2.8 GB at
    300,000 images, ~45 GB at bedroom's 3M): it reopens the source every `SOURCE_WINDOW` records
    and carries on after the last key, the same records in the same order, skips included."""
    import dedup.lsun

    from .pages import evict, mapped_kb

    src = tmp_path / "bedroom_train_lmdb"
    rng = np.random.default_rng(1)
    with lmdb.open(str(src), map_size=1 << 27) as env, env.begin(write=True) as txn:
        for _ in range(1500):  # the pass reads values as bytes: 40 kB of noise stands for a picture (60 MB)
            txn.put(rng.bytes(20).hex().encode(), rng.bytes(40_000))
    data = (src / "data.mdb").resolve()
    every = list(iter_source(src))
    assert len(every) == 1500 and [k for k, _ in every] == sorted(k for k, _ in every)
    monkeypatch.setattr(dedup.lsun, "SOURCE_WINDOW", 7)
    evict(data)
    peak = 0
    for k, (key, value) in enumerate(iter_source(src)):
        assert (key, value) == every[k]
        if k % 20 == 0:  # reading smaps takes ~30 ms
            peak = max(peak, mapped_kb(data))
    assert k == 1499 and mapped_kb(data) == 0
    monkeypatch.setattr(dedup.lsun, "SOURCE_WINDOW", 10**6)
    evict(data)
    whole = 0
    for k, _ in enumerate(iter_source(src)):
        if k % 20 == 0:  # reading smaps takes ~30 ms
            whole = max(whole, mapped_kb(data))
    # a window's pages (the kernel maps neighbours of each page read too), not the source's
    assert 0 < peak < whole / 4 and whole > 40_000, (peak, whole)
    monkeypatch.setattr(dedup.lsun, "SOURCE_WINDOW", 7)
    for skip in (0, 5, 7, 8, 14, 1499, 1500, 2000):
        assert list(iter_source(src, skip=skip)) == every[skip:], skip
    # from a key, as the import's parts start (a part of fan-out opens the source at its first key)
    from dedup.lsun import iter_lsun_lmdb

    for start in (0, 6, 700, 1499):
        assert list(iter_lsun_lmdb(src, start_key=every[start][0])) == every[start:], start
    with pytest.raises(RuntimeError, match="no longer in"):
        next(iter_lsun_lmdb(src, start_key="0" * 40))


def test_image_folder_import_and_corrupt_rows(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "b").mkdir(parents=True)
    for i, (img, _) in enumerate(random_crops(96, 2, seed=2)):
        if i == 12:
            break
        target = folder / ("b" if i % 2 else "") / f"{i:03d}.png"
        target.write_bytes(encode_image(img, "png"))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    (folder / "notes.txt").write_text("not an image, not even looked at")
    s = import_lsun(LsunImportConfig(source=folder, category="folder", size=32), tmp_path / "root", progress=False)
    assert s.imported == 12 and s.rejected == 1
    (row,) = read_jsonl(tmp_path / "root/interim/lsun/folder/import-rejected.jsonl")
    assert row["key"] == "broken.jpg" and row["status"] == "corrupt" and row["reason"]


_IMPORT = textwrap.dedent("""
    import sys
    from dedup import LsunImportConfig, import_lsun
    import_lsun(LsunImportConfig(source=sys.argv[1], size=64, shard_records=40, workers=1), sys.argv[2],
                progress=False)
""")


def test_import_resumes_after_sigkill(tmp_path):
    src = tmp_path / "src"
    write_lsun_lmdb(src, 400, size=96, fmt="webp", seed=4)
    clean = import_lsun(LsunImportConfig(source=src, size=64, shard_records=40, workers=1), tmp_path / "clean",
                        progress=False)
    out = tmp_path / "root" / "interim/lsun/bedroom/shards"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _IMPORT, str(src), str(tmp_path / "root")], cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and len(list(out.glob("shard-*.lmdb"))) >= 3:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (out / "manifest.json").exists()
    done = import_lsun(LsunImportConfig(source=src, size=64, shard_records=40, workers=1), tmp_path / "root",
                       progress=False)
    a, b = open_dataset(done.output).manifest, open_dataset(clean.output).manifest
    assert a.count == b.count == 400
    assert [s.sha256 for s in a.shards] == [s.sha256 for s in b.shards]


@pytest.fixture
def lsun_set(tmp_path):
    src = tmp_path / "src"
    planted = write_lsun_lmdb(src, 300, size=128, fmt="webp", seed=7, duplicates=0.1)
    s = import_lsun(LsunImportConfig(source=src, size=64), tmp_path / "root", progress=False)
    return s.output, planted


def test_find_duplicates_recovers_planted_pairs(lsun_set):
    dataset, planted = lsun_set
    s = find_duplicates(DedupConfig(), dataset, progress=False)
    out = s.out_dir
    clusters = list(read_jsonl(out / "clusters.jsonl"))
    cluster_of = {m["key"]: c["cluster"] for c in clusters for m in c["members"]}
    found = sum(1 for dup, orig in planted if dup in cluster_of and cluster_of.get(orig) == cluster_of[dup])
    assert found >= 0.75 * len(planted), (found, len(planted))
    keep = np.load(out / "keep.npy")
    removed = list(read_jsonl(out / "removed.jsonl"))
    assert len(keep) + len(removed) == s.records == 300 and s.removed == len(removed)
    assert not set(keep.tolist()) & {r["index"] for r in removed}
    for c in clusters:  # exactly one kept per cluster, and it is the one the rule picks
        kept = [m for m in c["members"] if m["kept"]]
        assert len(kept) == 1 and kept[0]["key"] == min(c["members"], key=lambda m: (-m["pixels"], m["key"]))["key"]
    assert all(r["status"] == "duplicate" and r["reason"] for r in removed)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["keep_rule"].startswith("largest resolution") and summary["verify"]
    assert summary["threshold"] == DedupConfig().candidate_threshold
    c = s.counts
    assert c["verified_pairs"] + c["already_joined_pairs"] == c["candidate_pairs"] and c["unverified_pairs"] == 0
    assert c["verified_pairs"] > c["verified_links"] > 0
    gallery = cv2.imread(str(out / "gallery.png"))
    assert gallery is not None and gallery.shape[0] >= 96 and gallery.std() > 10
    pairs = np.load(out / "pairs.npy")
    # within the candidate radius, but for the pairs a re-framed copy proposed
    assert pairs.shape[1] == 3 and (pairs[:, 2] > DedupConfig().candidate_threshold).sum() == s.counts["framed_links"]
    # why each near-duplicate was linked: its hash distance and the verification's agreement
    near = [r for r in removed if not r["exact"]]
    assert near and all(r["link"]["agreement"] >= DedupConfig().min_agreement and "tiles agree" in r["reason"]
                        for r in near)


def test_verification_in_parts_and_within_a_budget(lsun_set, tmp_path, monkeypatch):
    """Checked in parts through worker processes, the groups are those of one pass; past the budget,
    the closest candidates are checked, the rest stay apart, and the summary says how far it got."""
    import dedup.stage

    dataset, _ = lsun_set
    whole = find_duplicates(DedupConfig(), dataset, tmp_path / "whole", progress=False)
    monkeypatch.setattr(dedup.stage, "VERIFY_PART", 7)
    monkeypatch.setattr(dedup.stage, "FAN_OUT_PAIRS", 8)
    parts = find_duplicates(DedupConfig(workers=2), dataset, tmp_path / "parts", progress=False)
    assert whole.counts["candidate_pairs"] > 14  # several parts
    for name in ("removed.jsonl", "clusters.jsonl"):
        assert list(read_jsonl(whole.out_dir / name)) == list(read_jsonl(parts.out_dir / name))
    budget = whole.counts["candidate_pairs"] // 3
    s = find_duplicates(DedupConfig(max_verified_pairs=budget), dataset, tmp_path / "budget", progress=False)
    c = s.counts
    assert c["verified_pairs"] + c["already_joined_pairs"] == budget
    assert c["unverified_pairs"] == c["candidate_pairs"] - budget
    assert c["verified_up_to_distance"] < whole.counts["verified_up_to_distance"]
    assert 0 < c["verified_links"] < whole.counts["verified_links"]
    links = [r["link"] for r in read_jsonl(s.out_dir / "removed.jsonl") if r["link"]]
    assert links and all(k["distance"] <= c["verified_up_to_distance"] or k["reframed"] for k in links)


def test_new_threshold_does_not_rehash(lsun_set):
    dataset, _ = lsun_set
    stricter = find_duplicates(DedupConfig(min_agreement=0.95, candidate_threshold=12), dataset, progress=False)
    hashes = stricter.out_dir / "hashes-phash.npz"
    stamp = hashes.stat().st_mtime_ns
    first = find_duplicates(DedupConfig(threshold=2, verify=False), dataset, progress=False)
    wider = find_duplicates(DedupConfig(threshold=10, verify=False), dataset, progress=False)
    framed = find_duplicates(DedupConfig(probe_threshold=4, max_verified_pairs=10), dataset, progress=False)
    assert hashes.stat().st_mtime_ns == stamp  # the saved hashes were read, not recomputed
    assert wider.removed >= first.removed and stricter.counts["verified_pairs"] > 0
    f = framed.counts
    assert f["verified_pairs"] + f["already_joined_pairs"] == 10 < f["candidate_pairs"]


def test_pair_tables_and_strongest_links_agree_with_dicts_in_columns():
    """Verification's agreements and the re-framings that proposed pairs are columns (`PairTable`),
    and each record's strongest link is found in columns: the same answers as dicts of tuples and
    the plain loop (ties included: the first link listed wins), without an object per pair."""
    import tracemalloc

    from dedup.stage import PairTable, _strongest_links

    rng = np.random.default_rng(0)
    n = 400
    pairs = np.unique(np.sort(rng.integers(0, n, (4000, 2)), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    scores = rng.choice([0.5, 0.75, 1.0], len(pairs))  # few values: many ties
    table = PairTable(pairs, n, scores)
    ref = {(a, b): s for (a, b), s in zip(pairs.tolist(), scores.tolist(), strict=True)}
    probe = rng.integers(0, n, (3000, 2))
    assert table.holds(probe).tolist() == [(min(a, b), max(a, b)) in ref for a, b in probe.tolist()]
    for a, b in probe[:300].tolist():
        got = ref.get((min(a, b), max(a, b)))
        assert table.get(a, b) == (None if got is None else (got,))
    with pytest.raises(KeyError):
        table.column(np.array([[0, 0]]))
    shuffled = rng.permutation(pairs)
    same_code = shuffled[:300]
    near = np.column_stack([shuffled[300:, ::-1], rng.integers(1, 12, len(shuffled) - 300)])  # either way round
    best: dict[int, tuple[int, int, float]] = {}
    for a, b, d in np.concatenate([np.column_stack([same_code, np.zeros(300, np.int64)]), near]).tolist():
        score = ref[(min(a, b), max(a, b))]
        for x, y in ((a, b), (b, a)):
            if x not in best or score > best[x][2]:
                best[x] = (y, d, score)
    assert _strongest_links(same_code, near, table) == best
    assert _strongest_links(same_code, near, PairTable.empty(n)) == {}
    # 300,000 links among 3,000 records: dicts of tuples took ~300 bytes a pair (~90 MB)
    many = rng.integers(0, 3000, (300_000, 2))
    many = many[many[:, 0] != many[:, 1]]
    tracemalloc.start()
    table = PairTable(many, 3000, rng.random(len(many)))
    links = _strongest_links(None, np.column_stack([many, np.ones(len(many), np.int64)]), table)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(links) == len(np.unique(many)) and peak < 40e6, peak  # dicts and their loop: 100 MB


def test_hashes_alone_skip_the_reframed_copies_until_verification_asks(lsun_set, tmp_path):
    """Without verification nothing searches with the re-framed copies' codes, so they are not
    hashed (2.3-2.9x the time of the code alone); verification hashes them once, and the codes
    found either way agree."""
    from dedup.hashing import PROBES, Hashes

    dataset, _ = lsun_set
    out = tmp_path / "dedup"
    alone = find_duplicates(DedupConfig(verify=False), dataset, out, progress=False)
    codes = Hashes.load(out / "hashes-phash.npz")
    assert codes.probes is None and alone.removed > 0
    verified = find_duplicates(DedupConfig(), dataset, out, progress=False)
    both = Hashes.load(out / "hashes-phash.npz")
    assert both.probes is not None and both.probes.shape == (len(both), len(PROBES)) and both.probes.any()
    assert np.array_equal(both.codes, codes.codes) and verified.counts["framed_pairs"] >= 0
    stamp = (out / "hashes-phash.npz").stat().st_mtime_ns
    again = find_duplicates(DedupConfig(verify=False), dataset, out, progress=False)
    assert (out / "hashes-phash.npz").stat().st_mtime_ns == stamp and again.removed == alone.removed


def test_exact_duplicates_and_corrupt_records(tmp_path):
    imgs = [img for img, _ in random_crops(64, 1, seed=9)][:8]
    with ShardWriter(tmp_path / "ds", name="t", image_size=None, encoding="png") as w:
        for k, img in enumerate(imgs):
            w.add(img, {"key": f"r{k}"})
        w.add(imgs[3], {"key": "r3-copy"})
        w.add_encoded(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64, {"key": "broken"})
    s = find_duplicates(DedupConfig(threshold=0, verify=False), tmp_path / "ds", progress=False)
    assert s.corrupt == 1 and s.removed == 1
    (row,) = read_jsonl(s.out_dir / "removed.jsonl")
    assert row["key"] == "r3-copy" and row["keep_key"] == "r3" and row["exact"] and "identical" in row["reason"]
    (bad,) = read_jsonl(s.out_dir / "hash-rejected-phash.jsonl")
    assert bad["key"] == "broken" and bad["status"] == "corrupt"
    assert 9 not in np.load(s.out_dir / "keep.npy").tolist()


_HASH = textwrap.dedent("""
    import sys
    from dedup import hash_images
    hash_images(sys.argv[1], sys.argv[2], "phash", workers=1, part_size=20, progress=False)
""")


def test_hashing_resumes_after_sigkill(tmp_path, lsun_set):
    dataset, _ = lsun_set
    clean = hash_images(dataset, tmp_path / "clean", "phash", workers=1, part_size=20, progress=False)
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _HASH, str(dataset), str(out)], cwd=REPO, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if len(list(out.glob("hash-parts-*/part-*.npz"))) >= 4:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    resumed = hash_images(dataset, out, "phash", workers=1, part_size=20, progress=False)
    assert 0 < resumed.parts_computed < 15  # the parts finished before the kill were reused
    for field in ("codes", "pixels", "status", "sha_bytes", "sha_pixels"):
        np.testing.assert_array_equal(getattr(resumed, field), getattr(clean, field))
    assert np.array_equal(Hashes.load(out / "hashes-phash.npz").codes, clean.codes)


def test_autoencoder_hash_method(lsun_set):
    dataset, _ = lsun_set
    s = find_duplicates(DedupConfig(method="ae", ae_epochs=3, threshold=4, verify=False), dataset, progress=False)
    h = Hashes.load(s.out_dir / "hashes-ae.npz")
    assert h.codes.shape == (300, 2) and h.method == "ae"
    bits = np.unpackbits(h.codes.view(np.uint8), axis=1)
    assert 0.05 < bits.mean() < 0.95 and len(np.unique(h.codes, axis=0)) > 250  # a useful hash, not a constant
    assert verify_dataset(dataset).ok


def test_autoencoder_learns_from_edited_copies():
    """The denoiser's inputs are edited copies of its targets: moved, re-toned, some with a caption
    bar; the same generator seed gives the same edits."""
    import torch

    from dedup.ae import edit_batch

    crops = np.stack([cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA)
                      for img, _ in random_crops(64, 2, seed=4)])[:64]
    x = torch.from_numpy(crops.reshape(len(crops), -1)).float() / 255
    edited = edit_batch(x, torch.Generator().manual_seed(0))
    assert edited.shape == x.shape and edited.min() >= 0 and edited.max() <= 1
    assert torch.equal(edited, edit_batch(x, torch.Generator().manual_seed(0)))
    change = (edited - x).abs().mean(dim=1)
    assert (change > 0.01).all()  # every copy edited ...
    corr = torch.nn.functional.cosine_similarity(edited - edited.mean(1, keepdim=True), x - x.mean(1, keepdim=True))
    assert corr.median() > 0.5  # ... and still the same picture
    bottom = edited.view(-1, 32, 32, 3)[:, 28:].reshape(len(x), -1)
    barred = (bottom.std(dim=1) < 0.02).float().mean()
    assert 0.05 < barred < 0.5  # about a quarter carry a caption bar


def test_cli_lsun_sample_import_and_dedup(tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["lsun-sample", str(tmp_path / "lmdb"), "--n", "80", "--size", "96"])
    assert r.exit_code == 0, r.output
    env = lmdb.open(str(tmp_path / "lmdb"), readonly=True, lock=False)
    assert env.stat()["entries"] == 80
    env.close()
    r = runner.invoke(app, ["lsun-import", str(tmp_path / "lmdb"), "--size", "32", "--root", str(tmp_path / "root")])
    assert r.exit_code == 0 and "imported 80" in r.output, r.output
    r = runner.invoke(app, ["dedup", str(tmp_path / "root/interim/lsun/bedroom/shards"), "--threshold", "6",
                            "--root", str(tmp_path / "root")])
    assert r.exit_code == 0 and "80 records" in r.output and "re-framed within 10" in r.output, r.output
    r = runner.invoke(app, ["dedup", str(tmp_path / "root/interim/lsun/bedroom/shards"), "--probe-threshold", "-1",
                            "--root", str(tmp_path / "root")])
    assert r.exit_code == 0 and "80 records" in r.output and "re-framed" not in r.output, r.output
    r = runner.invoke(app, ["dedup", str(tmp_path / "nothing"), "--root", str(tmp_path / "root")])
    assert r.exit_code == 1 and "no dataset" in r.output


def test_verification_tells_an_edited_copy_from_another_shot_of_the_scene():
    """dedup.verify: a rotated, shifted, captioned or re-toned copy of a real photograph is the same
    picture; another photograph is not."""
    from dedup.verify import prepare, verify
    from wikifaces.fixtures.samples import available_photos, load_rgb

    photos = {p.id: load_rgb(path) for p, path in available_photos(demo_only=False)}
    img = cv2.resize(photos["astronaut"], (256, 256), interpolation=cv2.INTER_AREA)
    a = prepare(img)
    m = cv2.getRotationMatrix2D((128, 128), 3, 1.0)
    captioned = np.concatenate([img, np.full((32, 256, 3), 20, np.uint8)])
    copies = {"rotate3": cv2.warpAffine(img, m, (256, 256), borderMode=cv2.BORDER_REFLECT),
              "shift3": img[8:, 8:], "gamma": (255 * (img / 255.0) ** 1.6).astype(np.uint8),
              "caption": captioned[16:272]}  # a caption bar, centre-cropped back to a square as import does
    for name, copy in copies.items():
        v = verify(a, prepare(np.ascontiguousarray(copy)))
        assert v.same, (name, v.reason)
    assert abs(verify(a, prepare(copies["rotate3"])).rotation) == pytest.approx(3, abs=1)
    for other in ("camera", "coffee", "chelsea"):
        assert not verify(a, prepare(photos[other])).same, other


def test_reframed_copies_propose_captioned_and_cropped_pairs(tmp_path):
    """A caption bar under a picture, or a 10 % crop, moves its hash too far for the candidate
    radius; the re-framed copies (top and centre enlarged) bring those pairs to verification, which
    links them, and no two different photographs end in one group."""
    from wikifaces.fixtures.samples import available_photos, load_rgb

    photos = [(p.id, load_rgb(path)) for p, path in available_photos(demo_only=False)
              if not p.id.startswith(("cv-left", "cv-right"))][:16]
    with ShardWriter(tmp_path / "ds", name="t", image_size=(64, 64), encoding="png") as w:
        for pid, img in photos:
            h, wd = img.shape[:2]
            bar = np.full((h // 8, wd, 3), 20, np.uint8)
            cv2.putText(bar, "Photo: Jane Doe / CC BY-SA", (4, h // 12), cv2.FONT_HERSHEY_SIMPLEX, h / 320,
                        (240, 240, 240), max(1, h // 160), cv2.LINE_AA)
            cropped = img[h // 20 : h - h // 20, wd // 20 : wd - wd // 20]
            w.add(centre_square(img, 64), {"key": f"{pid}", "photo": pid})
            w.add(centre_square(np.concatenate([img, bar]), 64), {"key": f"{pid}~caption", "photo": pid})
            w.add(centre_square(cropped, 64), {"key": f"{pid}~crop10", "photo": pid})

    def grouped(config: DedupConfig, out: str) -> tuple[int, list[dict]]:
        s = find_duplicates(config, tmp_path / "ds", tmp_path / out, progress=False)
        clusters = list(read_jsonl(s.out_dir / "clusters.jsonl"))
        for c in clusters:  # never two photographs in one group
            assert len({m["key"].split("~")[0] for m in c["members"]}) == 1, c["members"]
        removed = list(read_jsonl(s.out_dir / "removed.jsonl"))
        return sum(c["size"] - 1 for c in clusters), removed

    linked, removed = grouped(DedupConfig(), "with")
    linked_without, _ = grouped(DedupConfig(probe_threshold=None), "without")
    assert linked >= 0.7 * 2 * len(photos) and linked >= linked_without + 4, (linked, linked_without)
    framed = [r for r in removed if r["link"] and r["link"]["reframed"]]
    assert framed and all(r["link"]["reframed"]["as"] in ("top", "centre") and "re-framed" in r["reason"]
                          for r in framed)


def test_a_dense_cluster_hands_verification_only_the_closest_pairs(tmp_path, monkeypatch):
    """A picture in many crops makes pairs grow with the square of their number; verification
    checks at most `max_verified_pairs`, the closest first, so the search keeps only those as its
    steps come (34.7M pairs and a 7.3 GB peak for the faces rehearsal's hashes copied ten times,
    bench/dedup_clusters.py) and counts the rest: the same pairs, in the same order, as keeping all."""
    from dedup.config import DedupConfig
    from dedup.hashing import PROBES
    from dedup.stage import _links

    rng = np.random.default_rng(3)
    n, far = 700, np.uint64(sum(1 << b for b in range(0, 64, 5)))  # 13 bits apart: beyond the radius of 10

    def flipped(a: np.ndarray, times: int) -> np.ndarray:
        a = a.copy()
        for _ in range(times):
            a ^= np.uint64(1) << rng.integers(0, 64, a.shape).astype(np.uint64)
        return a

    base = np.full(n, rng.integers(0, 2**63, dtype=np.uint64))
    codes = flipped(np.where(np.arange(n) % 2 == 0, base, base ^ far), 2)  # two dense clusters 13 bits apart
    probes = np.stack([flipped(np.where(np.arange(n) % 2 == 0, codes, codes ^ far), 1) for _ in PROBES], axis=1)
    tags = np.array([f"{i:016d}".encode() for i in range(n)], "S16")
    hashes = Hashes(codes=codes[:, None], pixels=np.full(n, 64 * 64), status=np.zeros(n, np.int8), sha_bytes=tags,
                    sha_pixels=tags, method="phash", probes=probes)
    valid = np.ones(n, bool)
    every = _links(DedupConfig(max_verified_pairs=10**9), hashes, valid)
    budget = 1000
    some = _links(DedupConfig(max_verified_pairs=budget), hashes, valid)
    assert every.near_total == len(every.near) > 20 * budget and len(every.framed) == every.framed_total > 2 * budget
    assert (some.near_total, some.framed_total) == (every.near_total, every.framed_total)
    assert len(some.near) == len(some.framed) == budget
    for kept, whole in ((some.near, every.near), (some.framed, every.framed)):
        # as verification picks from all: closest first (one key a pair sorts by distance, then pair)
        assert np.all(np.diff(kept) > 0) and np.all(np.diff(whole) > 0)
        d_kept, d_whole = some.pack.unpack(kept)[0], every.pack.unpack(whole)[0]
        assert d_kept.max() < d_whole.max()  # the farthest were left out ...
        assert np.isin(whole[d_whole < d_kept.max()], kept).all()  # ... and every closer one kept
        assert np.isin(kept, whole).all()
    # each re-framed pair once, at its closest re-framing, never a pair the codes propose themselves
    _, i, j, kind = every.pack.unpack(every.framed)
    assert len(np.unique(i * n + j)) == len(i) and (kind >= 1).all()
    assert (hamming(hashes.codes, i, j) > DedupConfig().candidate_threshold).all()
    # the distinct re-framed pairs counted with 100 keys held, the rest on disk: the same count
    monkeypatch.setattr("dedup.distinct.HELD_KEYS", 100)
    spilled = _links(DedupConfig(max_verified_pairs=budget), hashes, valid, work=tmp_path / "keys")
    assert spilled.framed_total == every.framed_total and not (tmp_path / "keys").exists()
    np.testing.assert_array_equal(spilled.framed, some.framed)


def test_distinct_keys_are_counted_exactly_in_bounded_memory(tmp_path):
    """Keys beyond the limit go to parts on disk by value; the count is exact, a killed run's parts
    are not counted, and nothing is left behind."""
    from dedup.distinct import DistinctCount

    rng = np.random.default_rng(5)
    batches = [rng.integers(0, 20_000, rng.integers(0, 3_000)) for _ in range(40)]  # many repeats
    truth = len(np.unique(np.concatenate(batches)))
    work = tmp_path / "keys"
    work.mkdir()
    np.arange(50_000, 60_000, dtype=np.int64).tofile(work / "part-000.bin")  # a killed run's
    assert truth > 500
    for limit in (500, 10**6):
        counter = DistinctCount(work, limit=limit, parts=7)
        for b in batches:
            counter.add(b)
        assert counter.spilled == (limit == 500)
        assert counter.count() == truth and not work.exists()


def test_verification_keeps_a_bounded_cache_of_prepared_pictures(tmp_path, crops, monkeypatch):
    """A part of verification prepares each picture once while it fits its cache (dense clusters
    spread a part's pairs over the whole set: the cache grew to 200,000 pictures, 800 MB a worker);
    with a cache of 3 it prepares them again as needed and scores every pair the same."""
    from dedup import stage

    path = tmp_path / "ds"
    writer = ShardWriter(path, name="t", image_size=(32, 32), encoding="png")
    for image, meta in crops[:40]:
        writer.add(image, meta)
    writer.close()
    pairs = np.unique(np.sort(np.random.default_rng(0).integers(0, 40, (300, 2)), axis=1), axis=0)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    calls = []
    real = stage.prepare
    monkeypatch.setattr(stage, "prepare", lambda img: calls.append(1) or real(img))
    _, whole = stage.verify_part((0, pairs), str(path))
    assert len(calls) == len(np.unique(pairs))  # each once
    calls.clear()
    monkeypatch.setattr(stage, "PREPARED_CACHE", 3)
    _, bounded = stage.verify_part((0, pairs), str(path))
    assert len(calls) > 2 * len(np.unique(pairs))
    np.testing.assert_array_equal(bounded, whole)
    assert (whole > 0).sum() > 10  # the pairs were really compared


def test_freed_temporaries_leave_the_rss_when_the_heap_is_trimmed():
    """Arrays of a few MB made and dropped by one phase (the search's buffers, verification's sort
    of 2M candidates) stayed in the dedup stage's RSS for the rest of the run (~110 MB at 94,000
    records), since glibc keeps them on its heap: `trim_heap`, called between phases, returns them."""
    code = textwrap.dedent("""
        import sys, numpy as np, psutil
        from wikifaces.core.memory import trim_heap
        def private(): m = psutil.Process().memory_info(); return (m.rss - m.shared) >> 20
        big = np.ones(16 << 20, np.uint8); del big  # glibc then serves MB-sized blocks from its heap
        blocks = [np.ones(1 << 20, np.uint8) for _ in range(200)]
        last = blocks[-1]; del blocks  # one still held, at the heap's top
        before = private()
        trimmed = trim_heap() if sys.argv[1] == "trim" else False
        print(before, private(), trimmed, int(last.sum()))
    """)

    def run(how: str) -> list[str]:
        return subprocess.run([sys.executable, "-c", code, how], capture_output=True, text=True,
                              check=True).stdout.split()

    before, after, trimmed, total = run("keep")
    assert int(before) > 150 and int(after) > 150 and trimmed == "False" and total == str(1 << 20)  # kept
    before, after, trimmed, _ = run("trim")
    assert int(before) > 150 and int(before) - int(after) > 150 and trimmed == "True", (before, after)


def test_verification_unmaps_its_random_reads_every_few_pictures(tmp_path, monkeypatch):
    """A part of verification reads pictures at random over the whole set; the pages it read count
    in its RSS until unmapped (~590 MB a worker over 94,000 records with a window of 1,024). It
    unmaps every `RANDOM_WINDOW` pictures read and scores every pair the same."""
    from dedup import stage

    from .pages import evict, mapped_kb

    path = tmp_path / "ds"
    rng = np.random.default_rng(3)
    with ShardWriter(path, name="t", image_size=(96, 96), encoding="png") as w:
        for k in range(600):  # noise PNGs, ~27 kB each: 16 MB of records
            w.add(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8), {"key": f"k{k}"})
    data = next(path.glob("*.lmdb")).resolve()
    pairs = np.sort(rng.choice(600, (400, 2)), axis=1)
    pairs = pairs[pairs[:, 0] != pairs[:, 1]]
    real, peaks = stage.prepare, []
    monkeypatch.setattr(stage, "prepare", lambda img: (peaks.append(mapped_kb(data)), real(img))[1])

    def peak_with(window: int) -> tuple[int, np.ndarray]:
        monkeypatch.setattr(stage, "RANDOM_WINDOW", window)
        peaks.clear()
        evict(data)
        _, scores = stage.verify_part((0, pairs), str(path))
        assert mapped_kb(data) == 0  # closed at the end
        return max(peaks), scores

    bounded, windowed = peak_with(16)
    whole, unbounded = peak_with(10**6)
    np.testing.assert_array_equal(windowed, unbounded)
    assert whole > 8_000 and bounded < whole / 4, (bounded, whole)

def _dense_clusters(path, photos: int = 8, copies: int = 20) -> None:
    """Real photographs, each in `copies` slight edits (shifted crops, brightness, JPEG): groups
    whose candidate pairs grow with the square of their size; one copy stored twice (identical bytes)."""
    from wikifaces.fixtures.samples import available_photos, load_rgb

    rng = np.random.default_rng(5)
    chosen = [(p.id, load_rgb(f)) for p, f in available_photos(demo_only=False)
              if not p.id.startswith(("cv-left", "cv-right"))][:photos]
    with ShardWriter(path, name="t", image_size=(64, 64), encoding="png") as w:
        for pid, img in chosen:
            img = centre_square(img, 256)
            for k in range(copies):
                y, x = rng.integers(0, 9, 2)
                copy = np.clip(img[y : y + 240, x : x + 240] * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)
                _, jpeg = cv2.imencode(".jpg", copy, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(40, 95))])
                w.add(centre_square(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED), 64), {"key": f"{pid}~{k:02d}"})
        w.add(centre_square(cv2.imdecode(jpeg, cv2.IMREAD_UNCHANGED), 64), {"key": f"{pid}~again"})


def _worker_pid(part: int) -> tuple[int, int]:
    return part, os.getpid()


def test_a_process_executor_kept_open_starts_its_workers_once():
    """Inside `with`, `ProcessExecutor` keeps the pool its first `map` starts for every later `map`
    (and ends it with the block); outside, each `map` has a pool of its own."""
    import psutil

    from wikifaces.core.executor import ProcessExecutor

    def pids(ex: ProcessExecutor) -> set[int]:
        got: list[tuple[int, int]] = []
        ex.map(_worker_pid, range(6), on_result=got.append)
        assert sorted(part for part, _ in got) == list(range(6))
        return {pid for _, pid in got}

    with ProcessExecutor(2) as kept:
        rounds = [pids(kept) for _ in range(3)]
    workers = set().union(*rounds)
    assert len(workers) <= 2 and os.getpid() not in workers
    time.sleep(0.2)
    assert not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in workers)
    fresh = ProcessExecutor(2)
    first, second = pids(fresh), pids(fresh)
    assert not first & second and not first & workers  # a new pool each time


def test_verification_skips_pairs_already_joined_and_groups_as_checking_every_pair(tmp_path, monkeypatch):
    """A pair whose records verified links already joined cannot change a group, so it is not
    checked: the groups, kept records and links are those of checking every
    candidate pair, for a fraction of the checks (the 10,000-people rehearsal: 9,957 of 176,027
    one at a time). Rounds checked in parts through worker processes give the same outputs, and
    every round goes to one pool of them (a pool started each round took ~2 s, spawned)."""
    import dedup.stage
    from wikifaces.core import executor

    _dense_clusters(tmp_path / "ds")
    strict = DedupConfig(min_agreement=0.95)  # some copies fail (15 of 16 tiles agree): more rounds
    skipping = find_duplicates(strict, tmp_path / "ds", tmp_path / "skip", progress=False)
    with monkeypatch.context() as m:  # every candidate checked, as before skipping
        m.setattr(dedup.stage, "spanning", lambda group, pairs: np.ones(len(pairs), bool))
        m.setattr(dedup.stage, "joined", lambda group, pairs: np.zeros(len(pairs), bool))
        every = find_duplicates(strict, tmp_path / "ds", tmp_path / "every", progress=False)
    c, e = skipping.counts, every.counts
    assert e["verified_pairs"] == e["candidate_pairs"] > 500 and e["already_joined_pairs"] == 0
    assert c["verified_pairs"] + c["already_joined_pairs"] == c["candidate_pairs"] == e["candidate_pairs"]
    assert c["verified_pairs"] < 0.4 * e["verified_pairs"] and c["unverified_pairs"] == 0
    assert c["verified_pairs"] > c["verified_links"] and c["kept"] > c["clusters"]  # some failed, some alone

    def groups(s) -> list[list[str]]:
        return [[m["key"] for m in cl["members"]] for cl in read_jsonl(s.out_dir / "clusters.jsonl")]

    assert groups(skipping) == groups(every) and len(groups(every)) >= 4
    assert max(map(len, groups(every))) >= 10
    np.testing.assert_array_equal(np.load(skipping.out_dir / "keep.npy"), np.load(every.out_dir / "keep.npy"))
    removed = list(read_jsonl(skipping.out_dir / "removed.jsonl"))
    assert c["exact_links"] > 0
    # each record not identical to its keeper was joined by a checked pair that passed
    assert all(r["link"]["agreement"] >= DedupConfig().min_agreement for r in removed if not r["exact"])

    spied, pools = [], []
    real_fan_out, real_pool = dedup.stage.fan_out, executor.ProcessPoolExecutor
    monkeypatch.setattr(dedup.stage, "fan_out", lambda *a, **k: spied.append(len(a[2])) or real_fan_out(*a, **k))
    # a pool started is noted with the rounds of verification fanned out so far (hashing's come first)
    monkeypatch.setattr(executor, "ProcessPoolExecutor", lambda *a, **k: pools.append(len(spied)) or real_pool(*a, **k))
    monkeypatch.setattr(dedup.stage, "FAN_OUT_PAIRS", 4)
    monkeypatch.setattr(dedup.stage, "VERIFY_PART", 15)
    parts = find_duplicates(strict.model_copy(update={"workers": 2}), tmp_path / "ds", tmp_path / "parts",
                            progress=False)
    assert len(spied) >= 2 and max(spied) >= 2, (spied, pools)  # rounds in several parts, through worker processes
    assert [k for k in pools if k] == [1]  # one pool of workers for every round, started by the first
    for name in ("removed.jsonl", "clusters.jsonl"):
        assert list(read_jsonl(parts.out_dir / name)) == list(read_jsonl(skipping.out_dir / name))
    assert parts.counts == skipping.counts


def test_thin_rounds_are_filled_with_the_closest_pairs_left_and_group_the_same(tmp_path, monkeypatch):
    """Two groups that are not duplicates but have many close pairs failed one pair a round (1,264
    rounds of ~13 pairs over 9,400 records, on one core): while many pairs are left, a thin round
    is filled up with the closest pairs left. Fewer rounds, the groups and keep list of checking
    every pair."""
    import dedup.stage

    _dense_clusters(tmp_path / "ds")
    strict = DedupConfig(min_agreement=0.97, workers=1)  # many copies fail: many rounds
    rounds: list[int] = []
    real_check = dedup.stage._check
    monkeypatch.setattr(dedup.stage, "_check",
                        lambda c, d, pairs, *a: rounds.append(len(pairs)) or real_check(c, d, pairs, *a))
    one_by_one = find_duplicates(strict, tmp_path / "ds", tmp_path / "thin", progress=False)
    thin_rounds = list(rounds)
    monkeypatch.setattr(dedup.stage, "FILL_FROM", 0)
    monkeypatch.setattr(dedup.stage, "FAN_OUT_PAIRS", 20)  # workers=1: the filled rounds run here
    rounds.clear()
    filled = find_duplicates(strict, tmp_path / "ds", tmp_path / "filled", progress=False)
    filled_rounds = list(rounds)
    with monkeypatch.context() as m:  # every candidate checked
        m.setattr(dedup.stage, "spanning", lambda group, pairs: np.ones(len(pairs), bool))
        m.setattr(dedup.stage, "joined", lambda group, pairs: np.zeros(len(pairs), bool))
        every = find_duplicates(strict, tmp_path / "ds", tmp_path / "every", progress=False)

    def groups(s) -> list[list[str]]:
        return [[m["key"] for m in cl["members"]] for cl in read_jsonl(s.out_dir / "clusters.jsonl")]

    assert len(thin_rounds) >= 6 and max(thin_rounds[1:]) < 20  # thin rounds, one after another
    assert len(filled_rounds) < len(thin_rounds) / 2 and all(r >= 20 for r in filled_rounds[:-1]), filled_rounds
    assert groups(filled) == groups(one_by_one) == groups(every) and len(groups(every)) >= 4
    for s in (filled, one_by_one):
        np.testing.assert_array_equal(np.load(s.out_dir / "keep.npy"), np.load(every.out_dir / "keep.npy"))
    c, t = filled.counts, one_by_one.counts
    assert t["verified_pairs"] <= c["verified_pairs"] < every.counts["verified_pairs"]
    assert c["verified_pairs"] + c["already_joined_pairs"] == c["candidate_pairs"]


def test_union_find_helpers_agree_with_graph_components():
    """`spanning` picks, in order, the pairs that join two groups not yet joined (fewest pairs,
    same groups as all of them); `join` and `joined` agree with scipy's components."""
    from dedup.clusters import components, join, joined, spanning

    rng = np.random.default_rng(4)
    for n, m in ((50, 30), (200, 400), (300, 3000)):
        pairs = rng.integers(0, n, (m, 2)).astype(np.int64)
        group = np.arange(n, dtype=np.int64)
        join(group, pairs[: m // 3])  # some joined before
        before = group.copy()
        forest = spanning(group, pairs)
        np.testing.assert_array_equal(group, before)  # left as it was
        every = components(n, np.concatenate([pairs, pairs[: m // 3]]))
        # the forest with what was joined before makes the same groups, with no pair to spare
        some = components(n, np.concatenate([pairs[forest], pairs[: m // 3]]))
        same = set(zip(every.tolist(), some.tolist(), strict=True))
        assert len(same) == len(set(every.tolist())) == len(set(some.tolist()))
        assert forest.sum() == len(set(components(n, pairs[: m // 3]).tolist())) - len(set(every.tolist()))
        assert not forest[joined(before.copy(), pairs)].any()  # never a pair already joined
        join(group, pairs)
        np.testing.assert_array_equal(joined(group, np.column_stack([np.arange(n), np.zeros(n, np.int64)])),
                                      every == every[0])


def test_packed_pairs_sort_closest_first_and_unpack_exactly():
    """Candidate pairs are held one int64 each: sorting the keys must sort by (distance, i, j,
    kind), unpacking must give back every field, and a size that does not fit is refused."""
    from dedup.stage import _Packing

    rng = np.random.default_rng(11)
    n, kinds = 3_033_042, 3  # LSUN bedroom's records
    pack = _Packing(64, n, kinds)
    d, i, j, kind = rng.integers(0, 65, 5000), rng.integers(0, n, 5000), rng.integers(0, n, 5000), \
        rng.integers(0, kinds, 5000)
    keys = pack.keys(d, i, j, kind)
    order = np.argsort(keys, kind="stable")
    np.testing.assert_array_equal(order, np.lexsort((kind, j, i, d)))
    for got, want in zip(pack.unpack(keys), (d, i, j, kind), strict=True):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(pack.pair(keys), i * n + j)
    with pytest.raises(ValueError, match="do not fit"):
        _Packing(64, 400_000_000, kinds)
