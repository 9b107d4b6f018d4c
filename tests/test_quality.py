"""Training on little data (DiffAugment) and sample quality measured without downloads."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from shards import open_dataset
from training import TrainConfig, build_models, load_checkpoint, sample_z, train_dcgan
from training.augment import POLICIES, cutout, diff_augment, translation
from training.data import InMemoryBatches, load_tensor, step_generator, to_model_input
from training.quality import frechet_distance, precision_recall, sample_quality

from .conftest import REPO, tiny_train


def tiny(dataset, tmp_path, **kw) -> TrainConfig:
    """The training tests' config, 6 steps, no samples or checkpoints between, contiguous tensors."""
    return tiny_train(dataset, tmp_path, **({"max_steps": 6, "sample_every": 100, "checkpoint_every": 100,
                                             "channels_last": False} | kw))


# -- DiffAugment -----------------------------------------------------------------------------------------
def test_diffaugment_is_differentiable_and_changes_images():
    x = torch.randn(3, 3, 8, 8, dtype=torch.double, requires_grad=True)
    for policy in [(p,) for p in POLICIES] + [POLICIES]:
        assert torch.autograd.gradcheck(lambda a, p=policy: diff_augment(a, p, torch.Generator().manual_seed(1)), (x,))
    y = diff_augment(x.detach(), POLICIES, torch.Generator().manual_seed(2))
    assert y.shape == x.shape and not torch.allclose(y, x)
    ones = torch.ones(64, 3, 16, 16)
    cut = cutout(ones, torch.Generator().manual_seed(0))
    zeroed = (cut == 0).float().mean((1, 2, 3))
    assert zeroed.max() == pytest.approx(0.25) and zeroed.min() > 0  # an 8x8 square, partly outside at times
    moved = translation(ones, torch.Generator().manual_seed(0))
    assert ((moved == 0).float().mean((1, 2, 3)) <= 1 - (14 / 16) ** 2 + 1e-6).all()  # at most 2 px each way
    grey = torch.zeros(4, 3, 8, 8)
    grey[:, 0] = 0.5
    shifted = diff_augment(grey, ("color",), torch.Generator().manual_seed(3))
    assert not torch.allclose(shifted, grey)


def test_d_sees_augmented_real_and_fake_images_in_both_updates(tiny_set, tmp_path):
    """Every input of D (real, fake for D, fake for G) carries cutout's zero square."""
    from training.train import setup_run, train_step

    seen = []
    run = setup_run(tiny(tiny_set, tmp_path, augment="diffaug", augment_policy="cutout"), None, None, None, False)
    run.d_train.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    real = torch.rand(16, 3, 32, 32) * 1.6 - 0.8  # never exactly zero
    z = sample_z(16, 100, torch.Generator().manual_seed(0))
    train_step(run, real, z, torch.Generator().manual_seed(5))
    assert len(seen) == 3
    for x in seen:
        zero = (x == 0).all(1).float().mean((1, 2))  # whole pixels zeroed, per image
        assert (zero > 0.05).all() and (zero <= 0.25 + 1e-6).all()
    run_none = setup_run(tiny(tiny_set, tmp_path, augment="none"), None, None, None, False)
    seen.clear()
    run_none.d_train.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach().clone()))
    train_step(run_none, real, z)
    assert torch.equal(seen[0], real)


def paper_reference(config: TrainConfig, steps: int) -> dict[str, torch.Tensor]:
    """The paper's loop written out plainly (pytorch/examples' dcgan step) on our batches, noise and
    flips: what `--augment none` must reproduce bit for bit."""
    torch.manual_seed(config.seed)
    g, d = build_models(config.image_size, config.z_dim, config.g_width, config.d_width, 3, config.kernel)
    opt_d = torch.optim.Adam(d.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    opt_g = torch.optim.Adam(g.parameters(), lr=config.lr, betas=(config.beta1, config.beta2))
    bce = nn.BCEWithLogitsLoss()
    data = InMemoryBatches(load_tensor(str(config.dataset), config.image_size, 3, False), config.batch_size,
                           config.seed, config.flip, torch.device("cpu"))
    for step in range(steps):
        epoch, start = divmod(step, data.steps_per_epoch)
        real_u8 = next(data.batches(epoch, start))
        gen = step_generator(config.seed, step, 0)
        real = to_model_input(real_u8, config.flip, gen, False)
        z = sample_z(real.shape[0], config.z_dim, gen)
        ones, zeros = torch.ones(len(real)), torch.zeros(len(real))
        d.zero_grad()
        bce(d(real), ones).backward()
        fake = g(z)
        bce(d(fake.detach()), zeros).backward()
        opt_d.step()
        g.zero_grad()
        bce(d(fake), ones).backward()
        opt_g.step()
    return {**{f"g.{k}": v for k, v in g.state_dict().items()}, **{f"d.{k}": v for k, v in d.state_dict().items()}}


def test_augment_none_is_the_papers_loop_bit_for_bit(tiny_set, tmp_path):
    steps = 9  # crosses an epoch boundary (96 images, batch 16)
    ref = paper_reference(tiny(tiny_set, tmp_path), steps)

    def weights(augment: str) -> dict[str, torch.Tensor]:
        s = train_dcgan(tiny(tiny_set, tmp_path / augment, max_steps=steps, augment=augment), progress=False)
        ckpt = load_checkpoint(s.run_dir / "checkpoints" / "latest.pt")
        return {**{f"g.{k}": v for k, v in ckpt["generator"].items()},
                **{f"d.{k}": v for k, v in ckpt["discriminator"].items()}}

    none, aug = weights("none"), weights("diffaug")
    assert none.keys() == ref.keys()
    assert all(torch.equal(none[k], ref[k]) for k in ref)
    assert not all(torch.equal(aug[k], ref[k]) for k in ref if k.endswith("weight"))


def test_auto_turns_diffaugment_on_below_the_threshold(tiny_set, tmp_path):
    small = train_dcgan(tiny(tiny_set, tmp_path / "a", max_steps=2), progress=False)
    large = train_dcgan(tiny(tiny_set, tmp_path / "b", max_steps=2, augment_below=50), progress=False)
    assert small.augment.startswith("diffaug") and "96 images < 20000" in small.augment
    assert large.augment.startswith("none (auto: 96 images >= 50")
    recorded = json.loads((small.run_dir / "config.json").read_text())["augment"]
    assert recorded == small.augment
    with pytest.raises(ValueError, match="comma-separated subset"):
        TrainConfig(augment_policy="colour")


# -- quality metrics -------------------------------------------------------------------------------------
def test_frechet_and_precision_recall_on_known_inputs():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 8))
    assert abs(frechet_distance(a, a)) < 1e-6
    shifted = a + np.array([3.0] + [0] * 7)
    assert frechet_distance(a, shifted) == pytest.approx(9.0, rel=1e-6)  # only the means differ
    b = rng.normal(size=(400, 8))
    assert 0 < frechet_distance(a, b) < 1.0
    assert precision_recall(a, a) == (1.0, 1.0)
    far = rng.normal(size=(400, 8)) + 50
    assert precision_recall(a, far) == (0.0, 0.0)
    p, r = precision_recall(a, a[:, :] * 0.1)  # samples collapsed to the middle: precise, no recall
    assert p > 0.9 and r < 0.5


@pytest.fixture(scope="module")
def judge():
    from faces.judge import FaceJudge

    return FaceJudge()


@pytest.fixture(scope="module")
def face_crops():
    """64 px crops (the detect stage's margin of 0.25) of every hand-checked face box of 48 px or more."""
    import cv2

    from wikifaces.fixtures.samples import available_photos, load_rgb


    boxes = json.loads((REPO / "tests" / "fixtures" / "face_boxes.json").read_text())["boxes"]
    out = []
    for photo, path in available_photos(faces=True, demo_only=False):
        image = None
        for x, y, w, h in boxes.get(photo.id, []):
            if min(w, h) < 48:
                continue
            image = load_rgb(path) if image is None else image
            side = round(max(w, h) * 1.5)
            cx, cy = x + w // 2, y + h // 2
            padded = cv2.copyMakeBorder(image, side, side, side, side, cv2.BORDER_REFLECT)
            crop = padded[cy + side - side // 2 : cy + side + side // 2, cx + side - side // 2 : cx + side + side // 2]
            out.append(cv2.resize(crop, (64, 64), interpolation=cv2.INTER_AREA))
    return np.stack(out)


def test_face_judge_on_real_crops_noise_and_grey(judge, face_crops):
    assert len(face_crops) >= 8
    assert judge.face_rate(face_crops) >= 0.9
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (32, 64, 64, 3), dtype=np.uint8)
    assert judge.face_rate(noise) == 0.0
    assert judge.face_rate(np.full((8, 64, 64, 3), 128, np.uint8)) == 0.0
    same = sample_quality(judge, face_crops, face_crops)
    assert abs(same["fd_dlib128"]) < 1e-3 and same["precision_dlib128"] == 1 and same["recall_dlib128"] == 1
    bad = sample_quality(judge, noise, face_crops)
    assert bad["face_rate"] == 0 and bad["recall_dlib128"] < 0.2 and bad["fd_dlib128"] > 10 * abs(same["fd_dlib128"])
    assert "dlib" in bad["space"] and bad["face_rate_real"] >= 0.9


def test_a_run_with_a_judge_writes_quality_everywhere(tiny_set, tmp_path, judge):
    s = train_dcgan(tiny(tiny_set, tmp_path, max_steps=4, quality_every=2, quality_samples=16), progress=False,
                    judge=judge)
    rows = [json.loads(line) for line in (s.run_dir / "metrics.jsonl").read_text().splitlines()]
    measured = [r["quality"] for r in rows if "quality" in r]
    assert [q["step"] for q in measured] == [2, 4]  # every 2 steps; the end is step 4, measured once
    assert set(measured[-1]) >= {"fd_dlib128", "precision_dlib128", "recall_dlib128", "face_rate", "face_rate_real"}
    summary = json.loads((s.run_dir / "summary.json").read_text())
    assert summary["quality"] == measured[-1] == s.quality == s.counts["quality"]
    assert measured[-1]["face_rate"] == 0.0  # 4 steps of training give no faces
    ds = open_dataset(tiny_set)
    assert measured[-1]["real_images"] == 16 and len(ds) == 96


# -- the step never waits for the device -----------------------------------------------------------------
def test_the_loop_reads_device_values_only_when_it_logs(tiny_set, tmp_path, monkeypatch):
    """Every read of a tensor's value by our training code (item, tolist, bool, int, float: on a GPU
    each one a synchronisation) is counted per step: only the logging steps (1, 10, 20) may read."""
    from training import train as train_module

    reads: dict[int, int] = {}
    current = {"step": 0}
    for name in ("item", "tolist", "__bool__", "__int__", "__float__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *a, _original=original, **kw):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(str(REPO / "training")):  # our loop's reads (torch's CPU-side Adam step
                reads[current["step"]] = reads.get(current["step"], 0) + 1  # counter is no device read)
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, counted)
    real_step = train_module.train_step

    def tracking(run, real, z, generator=None):
        current["step"] = run.step + 1  # the step this call makes
        return real_step(run, real, z, generator)

    monkeypatch.setattr(train_module, "train_step", tracking)
    train_dcgan(tiny(tiny_set, tmp_path, max_steps=20, sample_every=1000, augment="diffaug"), progress=False)
    assert set(reads) <= {0, 1, 10, 20}, sorted(reads)
    assert {1, 10, 20} <= set(reads)
