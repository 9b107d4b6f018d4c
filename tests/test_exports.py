"""Exports read by the ecosystem's own loaders, record by record: the image folder by Hugging Face
`datasets` (`imagefolder`, which needs `file_name` in metadata.jsonl) and the WebDataset tars by
the `webdataset` library. The published dataset of a stand-in build (real JPEG faces, real
metadata) is exported; nothing reaches a hub (offline mode, a temporary cache). It is QOI, which
those loaders do not read: exports carry PNG, compared pixel for pixel with the dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shards import export_dataset, open_dataset
from shards.format import decode_image, sniff_encoding


def _same_pixels(data: bytes, ds, i: int) -> bool:
    return sniff_encoding(data) == "png" and np.array_equal(decode_image(data), ds[i].image)


@pytest.fixture(scope="module")
def published(pipeline_root):
    return pipeline_root.processed("faces-64")


def test_the_folder_export_loads_with_hugging_face_datasets(published, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    out = tmp_path / "folder"
    n = export_dataset(published, out, to="folder")
    ds = open_dataset(published)
    loaded = datasets.load_dataset("imagefolder", data_dir=str(out), split="train",
                                   cache_dir=str(tmp_path / "hf-cache")).cast_column("image",
                                                                                      datasets.Image(decode=False))
    assert n == len(ds) == len(loaded) >= 10 and ds.manifest.image.encoding == "qoi"
    by_name = {row["image"]["path"].rsplit("/", 1)[-1]: row for row in loaded}
    for i in range(len(ds)):
        row = by_name[f"{i:08d}.png"]
        assert row["image"]["bytes"] is None or _same_pixels(row["image"]["bytes"], ds, i)
        assert _same_pixels((out / f"{i:08d}.png").read_bytes(), ds, i)
        meta = ds.read_meta(i)
        assert {k: row[k] for k in meta} == meta, i  # every metadata column, as stored
    first = datasets.load_dataset("imagefolder", data_dir=str(out), split="train", cache_dir=str(tmp_path / "c2"))
    assert first[0]["image"].size == (64, 64)  # and it decodes as an image


def test_the_webdataset_export_loads_with_webdataset(published, tmp_path):
    import webdataset as wds

    out = tmp_path / "wds"
    export_dataset(published, out, to="webdataset", records_per_tar=16)
    ds = open_dataset(published)
    tars = sorted(str(p) for p in out.glob("*.tar"))
    samples = list(wds.WebDataset(tars, shardshuffle=False, empty_check=False))
    assert len(samples) == len(ds) and len(tars) == -(-len(ds) // 16)
    for sample in samples:
        i = int(sample["__key__"])
        assert set(sample) >= {"png", "json"}  # QOI, which no loader reads, exported as PNG
        assert _same_pixels(sample["png"], ds, i)
        assert json.loads(sample["json"]) == ds.read_meta(i)


def test_the_parquet_export_loads_with_hugging_face_datasets(published, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    import datasets

    out = tmp_path / "parquet"
    export_dataset(published, out, to="parquet", records_per_tar=8)
    ds = open_dataset(published)
    files = sorted((out / "data").glob("*.parquet"))
    assert len(files) == -(-len(ds) // 8) > 1 and (out / "README.md").read_text().startswith("---\nconfigs:")
    loaded = datasets.load_dataset(str(out), split="train", cache_dir=str(tmp_path / "cache"))
    assert isinstance(loaded.features["image"], datasets.Image) and len(loaded) == len(ds)
    assert loaded[0]["image"].size == (64, 64)
    raw = loaded.cast_column("image", datasets.Image(decode=False))
    for i, row in enumerate(raw):
        assert _same_pixels(row["image"]["bytes"], ds, i) and row["image"]["path"] == f"{i:08d}.png"
        meta = ds.read_meta(i)
        assert {k: row[k] for k in meta} == meta, i  # every column, as stored


def test_identity_folders_hold_each_persons_faces(published, tmp_path):
    """One folder per person (torchvision's ImageFolder reads them as classes); scraped ids that are
    not plain names become hashes, never paths; a record without a person is a clear error."""
    from torchvision.datasets import ImageFolder

    from shards import ShardError, write_shards
    from shards.export import identity_folder

    out = tmp_path / "ids"
    n = export_dataset(published, out, to="identity-folders")
    ds = open_dataset(published)
    people = sorted({ds.read_meta(i)["person_id"] for i in range(len(ds))})
    folders = ImageFolder(str(out))
    assert n == len(ds) == len(folders) and folders.classes == people
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    for i, row in enumerate(rows):
        assert _same_pixels((out / row["file_name"]).read_bytes(), ds, i)
        assert row["file_name"].split("/")[0] == row["person_id"] == ds.read_meta(i)["person_id"]
    per_person = {p: sorted(q.name for q in (out / p).iterdir()) for p in people}
    assert all(names == [f"{k}.png" for k in range(len(names))] for names in per_person.values())

    img = ds[0].image
    hostile = tmp_path / "hostile"
    write_shards([(img, {"key": "a", "person_id": "../../etc"}), (img, {"key": "b", "person_id": "Q42"})],
                 hostile, name="h", image_size=(64, 64), encoding="png")
    export_dataset(hostile, tmp_path / "h-out", to="identity-folders")
    assert sorted(p.name for p in (tmp_path / "h-out").iterdir()) == sorted(
        ["Q42", identity_folder("../../etc"), "metadata.jsonl"])
    assert identity_folder("../../etc").startswith("id-") and not (tmp_path / "etc").exists()
    nobody = tmp_path / "nobody"
    write_shards([(img, {"key": "a"})], nobody, name="n", image_size=(64, 64), encoding="png")
    with pytest.raises(ShardError, match="record 0 has no 'person_id'"):
        export_dataset(nobody, tmp_path / "n-out", to="identity-folders")


def test_split_by_person_never_puts_a_person_on_two_sides(pipeline_root, tmp_path):
    """Published twice with --split-by-person (CLI, seeds 0 and 1) beside the build's own dataset,
    in a copy of the build (its receipts stay the shared build's)."""
    import shutil
    from collections import defaultdict

    from typer.testing import CliRunner

    from wikifaces.cli import app
    from wikifaces.core.paths import DataRoot
    from wikifaces.publish import PublishConfig

    pipeline_root = DataRoot(shutil.copytree(pipeline_root.root, tmp_path / "root", ignore=shutil.ignore_patterns(
        "*.lock")))

    runner = CliRunner()
    splits = {}
    for seed in (0, 1):
        name = f"faces-split-{seed}"
        r = runner.invoke(app, ["publish", "--root", str(pipeline_root.root), "--dataset", name, "--split-by-person",
                                "--split-seed", str(seed)])
        assert r.exit_code == 0, r.output
        ds = open_dataset(pipeline_root.processed(name))
        sides: dict[str, set[str]] = defaultdict(set)
        for meta in ds.iter_meta():
            sides[meta["person_id"]].add(meta["split"])
        assert all(len(s) == 1 for s in sides.values())  # no leakage
        people = {p: next(iter(s)) for p, s in sides.items()}
        summary = ds.manifest.summary["split"]
        assert summary["seed"] == seed and summary["by"] == "person_id"
        assert sum(summary["records"].values()) == len(ds) == len(open_dataset(pipeline_root.processed("faces-64")))
        for side in ("train", "val", "test"):
            assert summary["people"][side] == sum(v == side for v in people.values()) >= 1
            assert summary["records"][side] == len(ds.where("split", side))
        assert summary["people"]["train"] == pytest.approx(0.8 * len(people), abs=1.5)
        card = (pipeline_root.processed(name) / "README.md").read_text()
        assert "Split by person" in card and f"seed {seed}" in card
        splits[seed] = people
    assert splits[0].keys() == splits[1].keys() and splits[0] != splits[1]  # the seed decides, and is recorded
    with pytest.raises(ValueError, match="add up to 1"):
        PublishConfig(split_fractions=(0.5, 0.5, 0.5))
