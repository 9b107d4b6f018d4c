"""Face detection on real photographs from installed packages, with hand-labelled boxes."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from faces import DetectConfig, detect_faces, iou, process_image
from faces.crop import crop_face
from shards import open_dataset, verify_dataset
from wikifaces.cli import app
from wikifaces.core.tables import read_jsonl
from wikifaces.fixtures.samples import all_photos, load_rgb

from .conftest import REPO, build_images_root, require_photos

LABELS = json.loads((Path(__file__).parent / "fixtures" / "face_boxes.json").read_text())["boxes"]
CONFIG = DetectConfig(workers=1)


def photo(pid: str) -> Path:
    p = next(x for x in all_photos() if x.id == pid).path()
    if p is None:
        require_photos([], 1, pid)
    return p


def jpeg(rgb: np.ndarray, quality: int = 92, exif: Image.Exif | None = None) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality, **({"exif": exif} if exif is not None else {}))
    return buf.getvalue()


def faces_of(tmp_path: Path, data: bytes, config: DetectConfig = CONFIG) -> dict:
    path = tmp_path / f"img-{len(list(tmp_path.iterdir()))}"
    path.write_bytes(data)
    return process_image(str(path), "0" * 64, config)


def kept(result: dict) -> list[dict]:
    return [f for f in result["faces"] if f["status"] == "ok"]


@pytest.fixture(scope="module")
def face_photos():
    out = [(pid, p.path(), [tuple(b) for b in boxes]) for pid, boxes in LABELS.items()
           for p in all_photos() if p.id == pid and p.path() is not None]
    require_photos(out, 18, "labelled face photographs")
    return out


def test_labelled_faces_are_found(tmp_path, face_photos):
    found = total = 0
    for pid, path, boxes in face_photos:
        result = faces_of(tmp_path, Path(path).read_bytes())
        big = [b for b in boxes if min(b[2], b[3]) >= CONFIG.min_face]
        hits = [b for b in big if any(iou(tuple(f["box"]), b) >= 0.5 for f in kept(result))]
        found += len(hits)
        total += len(big)
        if pid in ("grace-hopper", "astronaut", "feat-single", "feat-surprise", "luispedro", "insight-hanks"):
            assert hits, f"{pid}: no kept face overlaps the labelled box {big}"
    assert total >= 20 and found / total >= 0.8, (found, total)


def test_photographs_without_faces_give_none(tmp_path):
    negatives = [(p.id, p.path()) for p in all_photos() if p.faces == 0 and p.path() is not None]
    require_photos(negatives, 80, "photographs without faces")
    hits = [pid for pid, path in negatives[::2] if kept(faces_of(tmp_path, Path(path).read_bytes()))]
    assert len(hits) <= 0.02 * len(negatives[::2]), hits
    boards = [(pid, path) for pid, path in negatives if pid.startswith(("cv-left", "cv-right"))]
    assert not [pid for pid, path in boards if kept(faces_of(tmp_path, Path(path).read_bytes()))]


def test_verification_drops_what_haar_alone_keeps(tmp_path):
    negatives = [p.path() for p in all_photos() if p.faces == 0 and p.path() is not None]
    require_photos(negatives, 80, "photographs without faces")
    haar_only = CONFIG.model_copy(update={"verify": "none"})
    fooled = [p for p in negatives if kept(faces_of(tmp_path, Path(p).read_bytes(), haar_only))]
    assert fooled, "Haar alone should fire on some textures or text here"
    for p in fooled:
        result = faces_of(tmp_path, Path(p).read_bytes())
        assert not kept(result)
        assert all(f["status"] == "unverified" and "mtcnn score" in f["reason"] for f in result["faces"])


def test_exif_rotated_copy_gives_the_same_face(tmp_path):
    rgb = load_rgb(photo("grace-hopper"))
    upright = kept(faces_of(tmp_path, jpeg(rgb)))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated; viewers turn it 90 degrees clockwise
    lying = np.ascontiguousarray(np.rot90(rgb))  # 90 degrees counter-clockwise
    rotated = faces_of(tmp_path, jpeg(lying, exif=exif))
    assert (rotated["width"], rotated["height"]) == (rgb.shape[1], rgb.shape[0])
    assert len(upright) == len(kept(rotated)) == 1
    assert iou(tuple(upright[0]["box"]), tuple(kept(rotated)[0]["box"])) >= 0.9


def test_small_face_is_too_small(tmp_path):
    rgb = load_rgb(photo("grace-hopper"))
    (face,) = faces_of(tmp_path, jpeg(rgb), CONFIG.model_copy(update={"min_face": 400}))["faces"]
    assert face["status"] == "too_small" and "min_face 400" in face["reason"]


def test_two_face_composite_is_ranked_by_size(tmp_path):
    a = load_rgb(photo("grace-hopper"))  # 600 x 512
    b = cv2.resize(load_rgb(photo("astronaut")), (360, 360), interpolation=cv2.INTER_AREA)
    canvas = np.full((600, 512 + 360, 3), 128, np.uint8)
    canvas[:, :512] = a
    canvas[120:480, 512:] = b
    result = faces_of(tmp_path, jpeg(canvas))
    faces = kept(result)
    assert len(faces) == 2
    assert [f["rank"] for f in faces] == [0, 1]
    assert faces[0]["box"][0] < 512 <= faces[1]["box"][0]  # Hopper's face is the larger
    assert all(f["faces_in_image"] == 2 for f in faces)
    ratio = min(faces[1]["box"][2:]) / min(faces[0]["box"][2:])
    assert faces[0]["second_face_ratio"] == pytest.approx(ratio, abs=0.01)
    single = faces_of(tmp_path, jpeg(canvas), CONFIG.model_copy(update={"single_face_only": True}))
    assert [f["status"] for f in single["faces"] if f["status"] != "unverified"] == ["not_single"] * 2


def test_input_hygiene_gives_rows_not_crashes(tmp_path):
    from wikifaces.fixtures.standin.server import _bad_body

    rgb = load_rgb(photo("grace-hopper"))
    good = jpeg(rgb)
    cases = {
        "truncated": (good[: len(good) // 2], "corrupt"),
        "not_image": (b"%PDF-1.4 not an image at all" * 50, "not_image"),
        "bomb": (_bad_body("bomb")[0], "too_large"),
        "corrupt_png": (_bad_body("corrupt_png")[0], "corrupt"),
    }
    for name, (data, status) in cases.items():
        result = faces_of(tmp_path, data)
        assert result["status"] == status and result["reason"] and not result["faces"], name
    # modes that must simply work: CMYK, palette, grey, RGBA (composited on mid grey), 16-bit
    im = Image.fromarray(rgb)
    for mode in ("CMYK", "P", "L", "RGBA", "I;16"):
        buf = io.BytesIO()
        if mode == "I;16":
            Image.fromarray(np.asarray(im.convert("L")).astype(np.uint16) * 257).save(buf, "PNG")
        else:
            im.convert(mode).save(buf, "TIFF" if mode == "CMYK" else "PNG")
        result = faces_of(tmp_path, buf.getvalue())
        assert result["status"] == "ok" and len(kept(result)) == 1, mode


def test_crops_margin_border_filter_and_alignment():
    rgb = load_rgb(photo("grace-hopper"))
    h, w = rgb.shape[:2]
    box = (w - 120, 10, 100, 100)  # near the top right corner
    img, t = crop_face(rgb, box, DetectConfig(border="reflect", size=96, resize_filter="lanczos"))
    assert img.shape == (96, 96, 3) and t["padded"] and t["filter"] == "lanczos" and t["size"] == 96
    assert t["square"][2] == pytest.approx(150)  # 100 px grown by 25% on each side
    img, t = crop_face(rgb, box, DetectConfig(border="clip", size=96))
    x0, y0, side = t["square"]
    assert not t["padded"] and x0 >= 0 and x0 + side <= w and y0 >= 0 and y0 + side <= h
    # alignment: a head turned by 10 degrees either way comes back as level as it was
    import math

    from faces.crop import find_eyes

    def tilt(eyes):
        (lx, ly), (rx, ry) = eyes
        return math.degrees(math.atan2(ry - ly, rx - lx))

    (face,) = LABELS["grace-hopper"]
    centre = (face[0] + face[2] / 2, face[1] + face[3] / 2)
    own = tilt(find_eyes(rgb, tuple(face)))  # her head is not quite level to begin with
    align, plain = DetectConfig(align="eyes", size=128), DetectConfig(size=128)
    upright = crop_face(rgb, tuple(face), align)[0].astype(int)
    for turn in (10, -10):
        turned = cv2.warpAffine(rgb, cv2.getRotationMatrix2D(centre, turn, 1.0), (w, h), borderMode=cv2.BORDER_REFLECT)
        crop, t = crop_face(turned, tuple(face), align)
        assert t["aligned"] and t["angle"] == pytest.approx(own - turn, abs=3), t
        unaligned = crop_face(turned, tuple(face), plain)[0].astype(int)
        # the aligned crop of the turned face looks like the upright one, far more than the plain crop does
        assert np.abs(crop.astype(int) - upright).mean() < 0.6 * np.abs(unaligned - upright).mean()
    # no eyes found: nothing rotated, and the record says so
    _, t = crop_face(np.zeros_like(rgb), tuple(face), DetectConfig(align="eyes"))
    assert t["aligned"] is False and t["angle"] == 0.0


def test_landmark_alignment_levels_a_turned_face_and_falls_back_without_landmarks():
    """FFHQ's square from O-Net's landmarks: a face turned by 20 degrees comes out like the upright
    one, at the box crop's scale; nonsense landmarks fall back to the box, and the record says so."""
    from faces.detect import Detection
    from faces.verify import MtcnnVerifier

    rgb = load_rgb(photo("grace-hopper"))
    h, w = rgb.shape[:2]
    (face,) = LABELS["grace-hopper"]
    box = tuple(face)
    onet = MtcnnVerifier()
    config = DetectConfig(align="landmarks", size=128)
    _, pts = onet.scores_and_landmarks(rgb, [Detection(box)])
    upright, t0 = crop_face(rgb, box, config, pts[0])
    assert t0["aligned"] and t0["align"] == "landmarks" and abs(t0["angle"]) < 8 and len(t0["landmarks"]) == 5
    assert 0.8 < t0["square"][2] / (max(face[2:]) * 1.5) < 1.25  # the box crop's framing, on average
    centre = (face[0] + face[2] / 2, face[1] + face[3] / 2)
    for turn in (20, -20):
        turned = cv2.warpAffine(rgb, cv2.getRotationMatrix2D(centre, turn, 1.0), (w, h), borderMode=cv2.BORDER_REFLECT)
        _, pts = onet.scores_and_landmarks(turned, [Detection(box)])
        crop, t = crop_face(turned, box, config, pts[0])
        assert t["aligned"] and t["angle"] == pytest.approx(t0["angle"] - turn, abs=4), t
        plain = crop_face(turned, box, DetectConfig(size=128, align="none"))[0]
        assert np.abs(crop.astype(int) - upright).mean() < 0.6 * np.abs(plain.astype(int) - upright).mean()
    # the mouth above the eyes, or no landmarks at all: the box, unaligned
    flipped = np.array([[50, 90], [90, 90], [70, 70], [55, 40], [85, 40]], np.float32)
    for bad in (flipped, None):
        img, t = crop_face(rgb, box, config, bad)
        assert img.shape == (128, 128, 3) and t["aligned"] is False and t["align"] == "none"


def test_yunet_needs_a_model_file(tmp_path):
    with pytest.raises(ValueError, match="yunet_model"):
        DetectConfig(detector="yunet")
    with pytest.raises(ValueError, match="never downloaded"):
        DetectConfig(detector="yunet", yunet_model=tmp_path / "missing.onnx")


@pytest.fixture
def images_root(tmp_path):
    """A data root with 24 stored portraits: real face photographs, variants and negatives."""
    images = []
    for pid in ("grace-hopper", "astronaut", "feat-multi", "insight-friends", "luispedro", "feat-single"):
        p = next((x for x in all_photos() if x.id == pid), None)
        if p is not None and p.path() is not None:
            rgb = load_rgb(p.path())
            images.append((pid, jpeg(rgb)))
            images.append((f"{pid}-flip", jpeg(np.ascontiguousarray(rgb[:, ::-1]), quality=85)))
    for p in [x for x in all_photos() if x.faces == 0 and x.path() is not None][:10]:
        images.append((p.id, jpeg(load_rgb(p.path()))))
    images.append(("broken", b"\xff\xd8\xff\xe0 not really a jpeg"))
    require_photos(images, 20, "photographs for the stage test")
    build_images_root(tmp_path / "root", images)
    return tmp_path / "root"


def test_stage_writes_shards_table_and_receipt(images_root):
    from wikifaces.pipeline import run_stage

    s = run_stage("detect", CONFIG.model_copy(update={"workers": 2}), images_root, progress=False).summary
    rows = list(read_jsonl(images_root / "interim/faces/faces.jsonl"))
    ok = [r for r in rows if r["status"] == "ok"]
    assert s.faces == len(ok) >= 12
    assert {r["status"] for r in rows} >= {"ok", "no_face", "corrupt"}
    ds = open_dataset(images_root / "interim/faces/shards")
    assert len(ds) == len(ok) and ds.manifest.image.height == 128
    assert [m["key"] for m in ds.iter_meta()] == [r["key"] for r in ok]
    meta = ds.read_meta(0)
    assert meta["licence"] == "CC0" and meta["artist"] == ok[0]["artist"] and meta["crop"]["size"] == 128
    row = ok[0]
    assert row["detector"]["name"].startswith("opencv-haar") and row["detector"]["params"]["scale_factor"] == 1.05
    assert row["verifier"] == {"name": "mtcnn", "threshold": 0.9} and row["verify_score"] >= 0.9
    assert row["neighbors"] >= 2 and row["crop"]["filter"] == "area"
    assert verify_dataset(images_root / "interim/faces/shards", decode=True).ok
    assert ds.manifest.summary["licences"] == {"CC0": len(ok)}
    receipt = json.loads((images_root / "receipts/detect.json").read_text())  # one receipt, the runner's
    assert receipt["stage"] == "detect" and receipt["counts"]["faces"] == len(ok)
    assert not list(images_root.rglob("*.receipt.json"))
    # a rerun redoes nothing and changes nothing
    before = (images_root / "interim/faces/faces.jsonl").read_text()
    again = detect_faces(CONFIG, images_root, progress=False)
    assert again.counts["processed_now"] == 0
    assert (images_root / "interim/faces/faces.jsonl").read_text() == before


def test_finishing_reads_results_back_instead_of_holding_them(tmp_path):
    """detect writes its table from the journal a batch of sources at a time: with 20,000 journalled
    results of ~2 kB each, finishing peaks far below what holding them would take."""
    import hashlib
    import tracemalloc

    import faces.stage as stage
    from wikifaces.core.paths import DataRoot
    from wikifaces.core.tables import write_jsonl

    n = 20_000
    root = DataRoot.resolve(tmp_path)
    shas = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    write_jsonl(root.raw_wikipedia / "images.jsonl", ({"status": "ok", "sha256": sha, "person_id": f"Q{i // 2}",
                                                       "title": f"Person {i // 2}", "file": f"File:P{i}.jpg"}
                                                      for i, sha in enumerate(shas)))
    reason = "no face found " + "." * 2000
    stage.journal_results(root, DetectConfig(), [{"source_sha256": sha, "faces": [], "status": "no_face",
                                                  "reason": reason, "width": 960, "height": 1200} for sha in shas])
    tracemalloc.start()
    plan = stage.plan_detection(DetectConfig(), root)
    s = stage.finish_detection(plan)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert not plan.todo and s.statuses == {"no_face": n}
    rows = list(read_jsonl(root.faces / "faces.jsonl"))
    assert [r["source_sha256"] for r in rows] == shas and rows[-1]["image_reason"] == reason
    assert peak < n * 1000, peak  # holding the results alone would take over 2 kB each


def _images_table(root, n: int, reused_every: int = 5) -> list[tuple[str, str]]:
    """An images table of n source rows: every `reused_every`-th file is also another person's
    (a later row), and a failed download between; returns (sha256, person) of the rows in order."""
    import hashlib

    from wikifaces.core.tables import write_jsonl

    rows = []
    for i in range(n):
        sha = hashlib.sha256(str(i).encode()).hexdigest()
        rows.append({"status": "ok", "sha256": sha, "person_id": f"Q{i}", "file": f"File:P{i}.jpg"})
        if i % reused_every == 0:
            rows.append({"status": "error", "sha256": None, "person_id": f"Q{i}", "file": f"File:X{i}.jpg"})
            rows.append({"status": "ok", "sha256": sha, "person_id": f"Q{i + 1}", "file": f"File:P{i}.jpg"})
    write_jsonl(root.raw_wikipedia / "images.jsonl", rows)
    return [(r["sha256"], r["person_id"]) for r in rows if r["sha256"]]


def test_the_plan_holds_its_sources_in_columns(tmp_path):
    """Planning 50,000 sources (a fifth of them reused) keeps a bytes array of them, in order of first
    use, and the people of the reused ones only: ~240 bytes an image at its peak, ~140 held, where
    dicts and task tuples held ~610."""
    import tracemalloc

    import faces.stage as stage
    from wikifaces.core.paths import DataRoot

    root = DataRoot.resolve(tmp_path)
    used = _images_table(root, 50_000)
    tracemalloc.start()
    plan = stage.plan_detection(DetectConfig(), root)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    order = list(dict.fromkeys(sha for sha, _ in used))
    assert list(plan.shas) == order and len(plan.todo) == len(order)
    assert plan.todo[7] == (str(root.image_store / order[7][:2] / order[7][2:4] / order[7]), order[7])
    assert plan.shared[order[5]] == ["Q5", "Q6"] and len(plan.shared) == 10_000
    assert [len(b) for b in stage.batches(plan.todo, 8)][-2:] == [8, 50_000 % 8 or 8]
    assert peak < 50_000 * 350, peak


def test_the_plan_tells_apart_sources_whose_hashes_collide(tmp_path, monkeypatch):
    """The plan finds reused sources by the hash of their sha256 first: two different sources
    with one hash are both planned, each at its first use, each with its own people."""
    import faces.stage as stage
    from wikifaces.core.paths import DataRoot

    root = DataRoot.resolve(tmp_path)
    used = _images_table(root, 40, reused_every=4)
    shas = list(dict.fromkeys(sha for sha, _ in used))
    monkeypatch.setattr(stage, "hash", lambda s: 1 if s in (shas[3], shas[17]) else hash(s), raising=False)
    plan = stage.plan_detection(DetectConfig(), root)
    assert list(plan.shas) == shas
    assert plan.shared[shas[3]] == ["Q3"] and plan.shared[shas[17]] == ["Q17"]
    assert plan.shared[shas[4]] == ["Q4", "Q5"]


_RUN = textwrap.dedent("""
    import sys
    from faces import DetectConfig, detect_faces
    detect_faces(DetectConfig(workers=1), sys.argv[1], progress=False)
""")


def test_kill_and_resume_equals_a_clean_run(tmp_path, images_root):
    import shutil

    clean = tmp_path / "clean"
    shutil.copytree(images_root, clean)
    detect_faces(CONFIG, clean, progress=False)
    journal = images_root / "interim/faces/faces.journal.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", _RUN, str(images_root)], cwd=REPO, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if journal.exists() and journal.read_text().count("\n") >= 6:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert journal.exists() and not (images_root / "interim/faces/faces.jsonl").exists()
    s = detect_faces(CONFIG, images_root, progress=False)
    assert 0 < s.counts["processed_now"] < s.images
    assert (images_root / "interim/faces/faces.jsonl").read_text() == (clean / "interim/faces/faces.jsonl").read_text()
    a = open_dataset(images_root / "interim/faces/shards").manifest
    b = open_dataset(clean / "interim/faces/shards").manifest
    assert [x.sha256 for x in a.shards] == [x.sha256 for x in b.shards]
    assert not journal.exists() and not (images_root / "interim/faces/work").exists()


def test_cli_detect(images_root):
    r = CliRunner().invoke(app, ["detect", "--root", str(images_root), "--workers", "1", "--size", "64"])
    assert r.exit_code == 0, r.output
    assert "faces from" in r.output
    assert open_dataset(images_root / "interim/faces/shards").manifest.image.height == 64
    r = CliRunner().invoke(app, ["detect", "--root", str(images_root), "--border", "mirror"])
    assert r.exit_code == 2 and "border" in r.output
