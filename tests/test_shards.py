"""The shard format: real LMDB files in tmp dirs, real photographs."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest
from typer.testing import CliRunner

from shards import (
    ShardError,
    ShardWriter,
    export_dataset,
    is_complete,
    open_dataset,
    read_manifest,
    verify_dataset,
    write_shards,
)
from shards.format import MANIFEST_NAME, shard_name
from wikifaces.cli import app
from wikifaces.core.files import sha256_file

from .conftest import REPO, run_python
from .pages import evict, mapped_kb


def _to_float(image):
    import torch

    return torch.from_numpy(image).float().div(255)


def _write(path, records, **kw):
    opts = {"name": "t", "image_size": (32, 32), "encoding": "png"} | kw
    return write_shards(records, path, **opts)


def test_round_trip_png_is_lossless(tmp_path, crops):
    m = _write(tmp_path / "ds", crops, parameters={"seed": 7}, summary={"licences": {"CC0": 3}})
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == len(crops) == m.count
    for i, (image, meta) in enumerate(crops):
        rec = ds[i]
        assert rec.image.dtype == np.uint8 and rec.image.shape == (32, 32, 3)
        np.testing.assert_array_equal(rec.image, image)
        assert rec.meta == meta
    assert [r.meta["key"] for r in ds] == [m["key"] for _, m in crops]
    np.testing.assert_array_equal(ds[-1].image, crops[-1][0])
    with pytest.raises(IndexError):
        ds[len(crops)]


def test_round_trip_jpeg_is_close(tmp_path, crops):
    _write(tmp_path / "ds", crops[:50], encoding="jpeg", quality=95)
    ds = open_dataset(tmp_path / "ds")
    assert ds.manifest.image.encoding == "jpeg"
    assert ds.read_bytes(0)[:3] == b"\xff\xd8\xff"
    err = np.abs(ds[0].image.astype(int) - crops[0][0].astype(int)).mean()
    assert err < 4, err
    export_dataset(tmp_path / "ds", tmp_path / "out")  # JPEG is exported as stored, byte for byte
    exported = [(tmp_path / "out" / f"{i:08d}.jpg").read_bytes() for i in range(50)]
    assert exported == [ds.read_bytes(i) for i in range(50)]


@pytest.mark.parametrize("encoding,magic", [("qoi", b"qoif"), ("raw", b"WFR1")])
def test_the_fast_lossless_encodings_round_trip_exactly(tmp_path, crops, encoding, magic):
    """qoi and raw: every pixel back, per item and in batches (raw copied straight from the map)."""
    _write(tmp_path / "ds", crops[:60], encoding=encoding)
    ds = open_dataset(tmp_path / "ds")
    assert ds.manifest.image.encoding == encoding and ds.read_bytes(0)[:4] == magic
    batch = ds.read_images(np.arange(len(ds))[::-1])
    for i, (image, meta) in enumerate(crops[:60]):
        np.testing.assert_array_equal(ds[i].image, image)
        np.testing.assert_array_equal(batch[len(ds) - 1 - i], image)
        assert ds[i].meta == meta
    assert verify_dataset(tmp_path / "ds", decode=True).ok
    with ShardWriter(tmp_path / "copy", name="t", image_size=(32, 32), encoding=encoding) as w:
        w.add_encoded(ds.read_bytes(3), {"key": "copied"})  # header checked without decoding
    with pytest.raises(ValueError, match="is 16x16"), \
            ShardWriter(tmp_path / "bad", name="t", image_size=(32, 32), encoding=encoding) as w:
        from shards import encode_image

        w.add_encoded(encode_image(crops[0][0][:16, :16], encoding), {"key": "small"})


@pytest.mark.parametrize("encoding", ["qoi", "jpeg", "raw"])
def test_blocks_read_like_single_records_and_save_the_page_rounding(tmp_path, crops, encoding):
    """Records packed 8 to an LMDB value, over shards that end mid-block: every way of reading gives
    the single-record dataset's records; the values no longer round up to whole pages each."""
    records = crops[:203]
    _write(tmp_path / "one", records, encoding=encoding, image_size=(32, 32), max_records=100)
    _write(tmp_path / "blk", records, encoding=encoding, image_size=(32, 32), max_records=100, block=8)
    one, blk = open_dataset(tmp_path / "one"), open_dataset(tmp_path / "blk")
    assert blk.manifest.format_version == 2 and one.manifest.format_version == 1
    assert [s.count for s in blk.manifest.shards] == [100, 100, 3]
    order = np.random.default_rng(1).permutation(len(records))
    batch = blk.read_images(order, threads=2)
    for pos, i in enumerate(order):
        np.testing.assert_array_equal(blk[int(i)].image, one[int(i)].image)
        np.testing.assert_array_equal(batch[pos], one[int(i)].image)
        assert blk.read_bytes(int(i)) == one.read_bytes(int(i)) and blk.read_meta(int(i)) == records[i][1]
    assert [(i, d, m) for i, d, m in blk.iter_encoded(45, 160)] == [(i, d, m) for i, d, m in one.iter_encoded(45, 160)]
    subset = [*order[:150].tolist(), 5, 5, -1]  # any order, across shards and blocks, repeats, from the end
    assert [(i, d, m) for i, d, m in blk.iter_at(subset)] == [
        (i % len(records), one.read_bytes(i), records[i][1]) for i in subset]
    assert [(i, d, m) for i, d, m in blk.iter_at(subset, images=False)] == [
        (i % len(records), None, records[i][1]) for i in subset]
    assert verify_dataset(tmp_path / "blk", decode=True).decoded == len(records)
    on_disk = {name: sum(p.stat().st_blocks * 512 for p in (tmp_path / name).glob("*.lmdb")) for name in ("one", "blk")}
    if encoding == "raw":  # 3 kB values: each takes a whole 4 kB page alone, packed they do not
        assert on_disk["blk"] < 0.9 * on_disk["one"], on_disk
    assert on_disk["blk"] <= on_disk["one"], on_disk


def test_a_version_1_reader_refuses_blocks_clearly_and_reads_the_rest(tmp_path, crops, monkeypatch):
    """Blocks are format_version 2; a dataset without them stays version 1, for older readers."""
    import shards.format

    _write(tmp_path / "blk", crops[:20], encoding="qoi", block=4)
    _write(tmp_path / "one", crops[:20], encoding="qoi")
    monkeypatch.setattr(shards.format, "FORMAT_VERSION", 1)  # what a version-1 reader checks against
    with pytest.raises(ShardError, match="format_version 2 is newer than this reader understands"):
        open_dataset(tmp_path / "blk")
    assert len(open_dataset(tmp_path / "one")) == 20
    manifest = json.loads((tmp_path / "blk" / MANIFEST_NAME).read_text())
    manifest["format_version"] = 1  # a forged or hand-edited manifest: blocks without version 2
    (tmp_path / "blk" / MANIFEST_NAME).write_text(json.dumps(manifest))
    monkeypatch.undo()
    with pytest.raises(ShardError, match="needs format_version 2"):
        open_dataset(tmp_path / "blk")


def test_a_damaged_block_is_named_not_misread(tmp_path, crops):
    import lmdb

    from shards.format import block_key

    _write(tmp_path / "ds", crops[:24], encoding="qoi", block=8)
    path = tmp_path / "ds" / "shard-00000.lmdb"
    env = lmdb.open(str(path), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        value = bytearray(txn.get(block_key(8)))
        value[12:16] = (1 << 31).to_bytes(4, "little")  # record 9's start now points far outside
        txn.put(block_key(8), bytes(value))
        value = bytearray(txn.get(block_key(16)))
        start = int.from_bytes(value[12:16], "little")
        value[start:start + 4] = b"junk"  # record 17's image no longer starts like a QOI image
        txn.put(block_key(16), bytes(value))
    env.close()
    ds = open_dataset(tmp_path / "ds")
    np.testing.assert_array_equal(ds[7].image, crops[7][0])
    with pytest.raises(ShardError, match="points outside"):
        ds[9]
    # in batches: spans go to the pool while the next is looked up; a look-up failing in the last
    # span, or a decode failing in the pool, is the same clear error once the other spans are done
    good = np.tile(np.arange(8), 12)
    np.testing.assert_array_equal(ds.read_images(good, threads=3)[-8:], np.stack([c[0] for c in crops[:8]]))
    with pytest.raises(ShardError, match="points outside"):
        ds.read_images(np.r_[good, 9], threads=3)
    with pytest.raises(ShardError, match="QOI bytes could not be decoded"):
        ds.read_images(np.r_[17, good], threads=3)
    report = verify_dataset(tmp_path / "ds", decode=True)
    assert any(p.startswith("record 9: image 1 of a block points outside") for p in report.shards[0].problems)


def test_an_unknown_encoding_is_a_clear_error(tmp_path, crops):
    _write(tmp_path / "ds", crops[:3])
    manifest = json.loads((tmp_path / "ds" / MANIFEST_NAME).read_text())
    manifest["image"]["encoding"] = "avif"
    (tmp_path / "ds" / MANIFEST_NAME).write_text(json.dumps(manifest))
    with pytest.raises(ShardError, match="encoding 'avif' is unknown to this reader"):
        open_dataset(tmp_path / "ds")


def test_manifest_records_everything(tmp_path, crops):
    m = _write(tmp_path / "ds", crops, max_records=100, parameters={"size": 32}, summary={"licences": {"CC0": 1}})
    on_disk = json.loads((tmp_path / "ds" / MANIFEST_NAME).read_text())
    assert on_disk["format"] == "wikifaces-shards" and on_disk["format_version"] == 1
    assert on_disk["name"] == "t" and on_disk["count"] == len(crops)
    assert on_disk["image"] == {"height": 32, "width": 32, "channels": 3, "encoding": "png", "block": 1}
    assert on_disk["provenance"]["parameters"] == {"size": 32}
    assert on_disk["provenance"]["code_version"] and on_disk["provenance"]["created"]
    assert on_disk["summary"] == {"licences": {"CC0": 1}}
    for s in m.shards:
        f = tmp_path / "ds" / s.file
        assert s.bytes == f.stat().st_size and s.sha256 == sha256_file(f)
    # nothing temporary is left behind
    assert sorted(p.name for p in (tmp_path / "ds").iterdir()) == sorted(
        [MANIFEST_NAME] + [s.file for s in m.shards])


def test_rolls_by_record_count(tmp_path, crops):
    m = _write(tmp_path / "ds", crops[:250], max_records=100)
    assert [s.count for s in m.shards] == [100, 100, 50]
    assert [s.file for s in m.shards] == [shard_name(i) for i in range(3)]
    ds = open_dataset(tmp_path / "ds")
    assert ds.locate(100) == (1, 0) and ds.locate(249) == (2, 49)
    np.testing.assert_array_equal(ds[150].image, crops[150][0])


def test_rolls_by_bytes(tmp_path, crops):
    sizes = []
    m = _write(tmp_path / "ds", crops[:60], max_bytes=20_000)
    assert len(m.shards) > 3
    ds = open_dataset(tmp_path / "ds")
    for shard in range(len(m.shards)):
        lo = sum(s.count for s in m.shards[:shard])
        sizes.append(sum(len(ds.read_bytes(lo + k)) for k in range(m.shards[shard].count)))
    # every shard but one holding a single oversized record stays under the cap
    assert all(size <= 20_000 or m.shards[i].count == 1 for i, size in enumerate(sizes))
    assert sum(s.count for s in m.shards) == 60


def test_map_grows_instead_of_failing(tmp_path, crops):
    m = _write(tmp_path / "ds", crops, initial_map_size=64 * 1024, commit_every=50)
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == len(crops) == m.count
    assert verify_dataset(tmp_path / "ds", decode=True).ok


def test_bad_input_is_refused_clearly(tmp_path, crops):
    image, meta = crops[0]
    with ShardWriter(tmp_path / "ds", name="t", image_size=(32, 32)) as w:
        with pytest.raises(ValueError, match="32x32"):
            w.add(np.zeros((16, 16, 3), np.uint8), {"key": "small"})
        with pytest.raises(TypeError, match="uint8"):
            w.add(image.astype(np.float32), {"key": "float"})
        with pytest.raises(ValueError, match="HxWx3"):
            w.add(image[:, :, 0], {"key": "grey"})
        with pytest.raises(TypeError, match="numpy array"):
            w.add(image.tolist(), {"key": "list"})
        with pytest.raises(ValueError, match="'key'"):
            w.add(image, {"source": "x"})
        with pytest.raises(ValueError, match="'key'"):
            w.add(image, {"key": ""})
        w.add(image, meta)
        with pytest.raises(ValueError, match="duplicate record key"):
            w.add(image, meta)
        with pytest.raises(ValueError, match="not JSON"):
            w.add(image, {"key": "obj", "x": object()})
        with pytest.raises(ValueError, match="jpeg"):
            w.add_encoded(b"\xff\xd8\xff\xe0" + b"0" * 100, {"key": "jpeg-in-png"})
    assert len(open_dataset(tmp_path / "ds")) == 1


def test_existing_dataset_is_not_clobbered(tmp_path, crops):
    _write(tmp_path / "ds", crops[:10])
    with pytest.raises(ShardError, match="already holds a complete dataset"):
        ShardWriter(tmp_path / "ds", name="t", image_size=(32, 32))
    _write(tmp_path / "ds", crops[10:15], mode="overwrite")
    assert len(open_dataset(tmp_path / "ds")) == 5


def test_add_encoded_keeps_bytes(tmp_path, crops):
    from shards import encode_image

    blobs = [encode_image(img, "png") for img, _ in crops[:5]]
    with ShardWriter(tmp_path / "ds", name="t", image_size=(32, 32)) as w:
        for blob, (_, meta) in zip(blobs, crops, strict=False):
            w.add_encoded(blob, meta)
        with pytest.raises(ValueError, match="16x16"):
            w.add_encoded(encode_image(np.zeros((16, 16, 3), np.uint8), "png"), {"key": "small"})
    ds = open_dataset(tmp_path / "ds")
    assert [ds.read_bytes(i) for i in range(5)] == blobs


def test_variable_size_dataset(tmp_path, crops):
    with ShardWriter(tmp_path / "ds", name="t", image_size=None, encoding="jpeg") as w:
        w.add(crops[0][0], crops[0][1])
        w.add(np.ascontiguousarray(np.tile(crops[1][0], (2, 1, 1))), crops[1][1])
    ds = open_dataset(tmp_path / "ds")
    assert ds.manifest.image.height is None
    assert ds[0].image.shape == (32, 32, 3) and ds[1].image.shape == (64, 32, 3)
    with pytest.raises(ShardError, match="one image size"):
        ds.read_images([0, 1])


def test_read_images_batch_matches_getitem(tmp_path, crops):
    _write(tmp_path / "ds", crops, max_records=64)
    ds = open_dataset(tmp_path / "ds")
    idx = np.random.default_rng(0).permutation(len(ds))[:150]
    batch = ds.read_images(idx, threads=2)
    assert batch.shape == (150, 32, 32, 3)
    for row, i in zip(batch, idx, strict=True):
        np.testing.assert_array_equal(row, crops[i][0])


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from shards import ShardWriter
    from wikifaces.fixtures.samples import random_crops
    out, mode, block = sys.argv[1], sys.argv[2], int(sys.argv[3])
    records = list(random_crops(size=32, per_photo=24, seed=7))[:230]
    with ShardWriter(out, name="t", image_size=(32, 32), max_records=100, mode=mode, commit_every=10,
                     block=block) as w:
        for i, (image, meta) in enumerate(records):
            if i < w.resumed_count:
                continue
            w.add(image, meta)
            if i == 150:
                print("mid-shard", flush=True)
                time.sleep(60)
""")


@pytest.mark.parametrize("block", [1, 8])
def test_writer_killed_mid_shard_then_resumed(tmp_path, crops, block):
    out = tmp_path / "ds"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(out), "new", str(block)], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "mid-shard"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    # nothing looks complete: no manifest, the reader says why, shard 1 is only a temp file
    assert not is_complete(out)
    with pytest.raises(ShardError, match="incomplete"):
        open_dataset(out)
    names = sorted(p.name for p in out.iterdir())
    assert "shard-00000.lmdb" in names and "shard-00001.lmdb" not in names
    assert "shard-00001.lmdb.tmp" in names
    # a plain rerun refuses to mix runs; a resume keeps shard 0 and finishes the rest
    with pytest.raises(ShardError, match="interrupted"):
        ShardWriter(out, name="t", image_size=(32, 32))
    done = subprocess.run([sys.executable, "-c", _KILL_SCRIPT.replace("if i == 150", "if False"),
                           str(out), "resume", str(block)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    clean = tmp_path / "clean"
    _write(clean, crops[:230], max_records=100, commit_every=10, block=block)
    resumed_m, clean_m = read_manifest(out), read_manifest(clean)
    assert resumed_m.count == clean_m.count == 230
    # byte-identical shards: the resumed dataset is the clean one
    assert [s.sha256 for s in resumed_m.shards] == [s.sha256 for s in clean_m.shards]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in clean.iterdir())
    other = 1 if block > 1 else 8  # resuming with other settings would mix two layouts: refused
    (out / MANIFEST_NAME).unlink()
    with pytest.raises(ShardError, match=f"blocks of {block}; this run writes png in blocks of {other}"):
        ShardWriter(out, name="t", image_size=(32, 32), max_records=100, mode="resume", block=other)


def test_flipped_byte_is_caught_and_named(tmp_path, crops):
    _write(tmp_path / "ds", crops, max_records=100)
    victim = tmp_path / "ds" / "shard-00001.lmdb"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    report = verify_dataset(tmp_path / "ds")
    assert not report.ok and report.damaged == ["shard-00001.lmdb"]
    assert "sha256" in report.shards[1].problems[0]
    result = CliRunner().invoke(app, ["verify", str(tmp_path / "ds")])
    assert result.exit_code == 1
    assert "shard-00001.lmdb" in result.output + (result.stderr or "")


def test_verify_decode_finds_a_damaged_record(tmp_path, crops):
    """A shard rewritten with a corrupt image (valid checksum in a forged manifest) fails --decode."""
    import lmdb

    from shards.format import image_key

    _write(tmp_path / "ds", crops[:20])
    path = tmp_path / "ds" / "shard-00000.lmdb"
    env = lmdb.open(str(path), subdir=False, lock=False)
    with env.begin(write=True) as txn:
        txn.put(image_key(3), b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    env.close()
    manifest = json.loads((tmp_path / "ds" / MANIFEST_NAME).read_text())
    manifest["shards"][0].update(bytes=path.stat().st_size, sha256=sha256_file(path))
    (tmp_path / "ds" / MANIFEST_NAME).write_text(json.dumps(manifest))
    assert verify_dataset(tmp_path / "ds").ok
    report = verify_dataset(tmp_path / "ds", decode=True)
    assert not report.ok and "record 3: image does not decode" in report.shards[0].problems


def test_missing_shard_and_missing_dataset(tmp_path, crops):
    _write(tmp_path / "ds", crops, max_records=100)
    (tmp_path / "ds" / "shard-00002.lmdb").unlink()
    assert verify_dataset(tmp_path / "ds").damaged == ["shard-00002.lmdb"]
    with pytest.raises(ShardError, match="does not exist"):
        open_dataset(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ShardError, match="not a wikifaces dataset"):
        open_dataset(tmp_path / "empty")


def test_dataloader_with_two_workers(tmp_path, crops):
    import torch
    from torch.utils.data import DataLoader

    from shards.torch import ShardDataset

    _write(tmp_path / "ds", crops, max_records=64)
    ds = ShardDataset(tmp_path / "ds", transform=_to_float)
    # forkserver: this process may have run Prefect flows, whose threads break forked workers
    loader = DataLoader(ds, batch_size=32, num_workers=2, shuffle=False, multiprocessing_context="forkserver")
    batches = list(loader)
    got = torch.cat(batches)
    want = torch.from_numpy(np.stack([im for im, _ in crops])).float().div(255)
    assert got.shape == want.shape
    assert torch.equal(got, want)
    plain = ShardDataset(tmp_path / "ds", with_meta=True)
    x, meta = plain[5]
    assert x.dtype == torch.uint8 and x.shape == (3, 32, 32) and meta["key"] == crops[5][1]["key"]


def test_importing_shards_loads_neither_torch_nor_prefect():
    r = run_python("import sys, shards; shards.open_dataset; "
                   "print(sorted(m for m in ('torch', 'prefect') if m in sys.modules))")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_cli_inspect_and_export(tmp_path, crops):
    _write(tmp_path / "ds", crops[:40], max_records=16)
    runner = CliRunner()
    sheet = tmp_path / "sheet.png"
    r = runner.invoke(app, ["inspect", str(tmp_path / "ds"), "-n", "9", "--out", str(sheet)])
    assert r.exit_code == 0, r.output
    assert "40" in r.output and "png" in r.output
    from wikifaces.fixtures.samples import load_rgb

    img = load_rgb(sheet)
    assert img.shape[0] >= 3 * 96 and img.std() > 10  # a real grid, not a blank image

    r = runner.invoke(app, ["export", str(tmp_path / "ds"), str(tmp_path / "folder"), "--to", "folder"])
    assert r.exit_code == 0, r.output
    files = sorted((tmp_path / "folder").glob("*.png"))
    assert len(files) == 40 and files[0].name == "00000000.png"
    np.testing.assert_array_equal(load_rgb(files[7]), crops[7][0])
    index = [json.loads(line) for line in (tmp_path / "folder" / "metadata.jsonl").read_text().splitlines()]
    assert index[7]["file_name"] == "00000007.png" and index[7]["key"] == crops[7][1]["key"]

    r = runner.invoke(app, ["export", str(tmp_path / "ds"), str(tmp_path / "wds"), "--to", "webdataset",
                            "--records-per-tar", "16"])
    assert r.exit_code == 0, r.output
    tars = sorted((tmp_path / "wds").glob("*.tar"))
    assert [t.name for t in tars] == ["shard-00000.tar", "shard-00001.tar", "shard-00002.tar"]
    with tarfile.open(tars[1]) as tf:
        names = tf.getnames()
        assert names[:2] == ["00000016.png", "00000016.json"] and len(names) == 32
        assert json.loads(tf.extractfile("00000016.json").read())["key"] == crops[16][1]["key"]

    r = runner.invoke(app, ["export", str(tmp_path / "ds"), str(tmp_path / "folder")])
    assert r.exit_code == 1 and "not empty" in r.output + (r.stderr or "")


def test_empty_dataset_is_valid(tmp_path):
    m = write_shards([], tmp_path / "ds", name="empty", image_size=(32, 32))
    assert m.count == 0 and m.shards == []
    ds = open_dataset(tmp_path / "ds")
    assert len(ds) == 0 and list(ds) == []
    assert verify_dataset(tmp_path / "ds", decode=True).ok


def test_a_pass_unmaps_what_it_read_as_it_goes(tmp_path, monkeypatch):
    """Pages read through a mapping count in a process's resident memory until it is unmapped: a
    whole pass over candidate shards (GBs at 100,000 people) grew identity's RSS with the data.
    Passes release every window, never a mapping another open dataset or the caller still uses,
    and `release` leaves the dataset readable."""
    import shards.reader

    rng = np.random.default_rng(0)
    records = [(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8), {"key": f"k{i}"}) for i in range(300)]
    _write(tmp_path / "ds", records, image_size=(64, 64), encoding="raw")  # 12 kB a record, 3.6 MB
    shard = (tmp_path / "ds" / shard_name(0)).resolve()
    monkeypatch.setattr(shards.reader, "PASS_WINDOW", 20)
    ds = open_dataset(tmp_path / "ds")
    evict(shard)
    peak = 0
    for i, data, meta in ds.iter_encoded():
        assert meta["key"] == f"k{i}" and data.endswith(records[i][0].tobytes())
        peak = max(peak, mapped_kb(shard))
    assert 0 < peak < 1200 and mapped_kb(shard) == 0  # a window's pages (~250 kB), then none
    assert [m["key"] for m in ds.iter_meta()] == [f"k{i}" for i in range(300)] and mapped_kb(shard) == 0
    # a kept subset in any order (identity, publish): read-around maps more per record, so smaller windows
    peak, subset = 0, rng.permutation(300)[:200].tolist()
    monkeypatch.setattr(shards.reader, "PASS_WINDOW", 10)
    evict(shard)
    for i, data, meta in ds.iter_at(subset):
        assert meta["key"] == f"k{i}" and data.endswith(records[i][0].tobytes())
        peak = max(peak, mapped_kb(shard))
    assert 0 < peak < 1200 and mapped_kb(shard) == 0  # 200 records would be 2,400 kB
    for i in range(300):
        ds.read_bytes(i)
    assert mapped_kb(shard) > 3000  # random access keeps what it read mapped, as a training loop wants
    ds.release()
    assert mapped_kb(shard) == 0
    np.testing.assert_array_equal(ds[7].image, records[7][0])  # mapped again when read
    # another open dataset reading the shard keeps its mapping through this one's passes
    other = open_dataset(tmp_path / "ds")
    other.read_bytes(0)
    list(ds.iter_encoded())
    assert mapped_kb(shard) > 0 and other.read_bytes(299) == ds.read_bytes(299)
    other.close()
    ds.close()
