"""DCGAN: the paper's architecture, training on shards, exact resume, DDP, tools, evaluation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from training import Discriminator, Generator, build_models, load_checkpoint, sample_z, train_dcgan
from training.tools import arithmetic, generate_grid, interpolate, memorisation
from wikifaces.cli import app

from .conftest import REPO, tiny_train

tiny = tiny_train


def test_architecture_is_the_papers():
    g, d = build_models(64, 100, 1024, 1024, 3, 4)
    shapes, x = [], torch.rand(2, 100) * 2 - 1
    h = x.view(2, 100, 1, 1)
    for layer in g.net:
        h = layer(h)
        if isinstance(layer, (nn.ConvTranspose2d,)):
            shapes.append(tuple(h.shape[1:]))
    assert shapes == [(1024, 4, 4), (512, 8, 8), (256, 16, 16), (128, 32, 32), (3, 64, 64)]
    maps = d.feature_maps(torch.rand(2, 3, 64, 64) * 2 - 1)
    assert [tuple(m.shape[1:]) for m in maps] == [(128, 32, 32), (256, 16, 16), (512, 8, 8), (1024, 4, 4)]
    assert d(torch.rand(2, 3, 64, 64)).shape == (2,)
    # BatchNorm everywhere but G's output and D's input; ReLU in G, LeakyReLU(0.2) in D; tanh out
    g_layers, d_layers = list(g.net), list(d.features)
    assert isinstance(g_layers[-1], nn.Tanh) and isinstance(g_layers[-2], nn.ConvTranspose2d)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in g_layers) == 4
    assert isinstance(d_layers[0], nn.Conv2d) and isinstance(d_layers[1], nn.LeakyReLU)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in d_layers) == 3
    assert all(m.negative_slope == 0.2 for m in d_layers if isinstance(m, nn.LeakyReLU))
    assert not any(isinstance(m, (nn.Linear, nn.MaxPool2d, nn.AvgPool2d)) for m in [*g.modules(), *d.modules()])
    # parameter counts, from the layer sizes (4x4 kernels, no conv biases)
    g_convs = 100 * 1024 * 16 + 1024 * 512 * 16 + 512 * 256 * 16 + 256 * 128 * 16 + 128 * 3 * 16
    g_bn = 2 * (1024 + 512 + 256 + 128)
    assert sum(p.numel() for p in g.parameters()) == g_convs + g_bn
    d_convs = 3 * 128 * 16 + 128 * 256 * 16 + 256 * 512 * 16 + 512 * 1024 * 16 + 1024 * 16
    assert sum(p.numel() for p in d.parameters()) == d_convs + 2 * (256 + 512 + 1024)
    # initialisation N(0, 0.02), BatchNorm scale N(1, 0.02)
    w = torch.cat([m.weight.detach().flatten() for m in g.modules() if isinstance(m, nn.ConvTranspose2d)])
    assert abs(w.mean().item()) < 1e-3 and w.std().item() == pytest.approx(0.02, rel=0.05)
    bn = torch.cat([m.weight.detach() for m in d.modules() if isinstance(m, nn.BatchNorm2d)])
    assert bn.mean().item() == pytest.approx(1, abs=0.01) and bn.std().item() == pytest.approx(0.02, rel=0.2)
    # z is uniform on [-1, 1]
    z = sample_z(20_000, 100, torch.Generator().manual_seed(0))
    assert z.min() >= -1 and z.max() <= 1 and z.mean().abs() < 0.01
    assert z.std().item() == pytest.approx(1 / 3**0.5, rel=0.01)


@pytest.mark.parametrize("size,kernel", [(32, 4), (128, 4), (64, 5)])
def test_other_sizes_and_kernels(size, kernel):
    g = Generator(size, 100, 256, 3, kernel)
    d = Discriminator(size, 256, 3, kernel)
    x = g(torch.rand(3, 100))
    assert x.shape == (3, 3, size, size) and d(x).shape == (3,)


def test_training_reduces_d_loss_and_writes_the_run(tiny_set, tmp_path):
    s = train_dcgan(tiny(tiny_set, tmp_path, max_steps=30, sample_every=10, checkpoint_every=10), progress=False)
    run = s.run_dir
    assert run.parent == tmp_path / "runs" and run.name == "00001-dcgan"
    config = json.loads((run / "config.json").read_text())
    assert config["config"]["batch_size"] == 16 and config["data_mode"] == "memory" and config["records"] == 96
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [r["loss_d"] for r in rows if "loss_d" in r]
    assert losses[0] > 1.0 and np.mean(losses[-2:]) < losses[0]  # D learns to tell real from fake
    assert {"loss_g", "d_x", "d_g_z", "images_per_second", "epoch"} <= set(rows[-1])
    assert sorted(p.name for p in (run / "samples").iterdir()) == [f"step-{k:07d}.png" for k in (10, 20, 30)]
    assert (run / "loss.png").stat().st_size > 5000
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    assert ckpt["step"] == 30 and set(ckpt) >= {"generator", "discriminator", "opt_g", "opt_d", "rng", "fixed_noise",
                                                  "config", "epoch"}
    assert ckpt["opt_g"]["state"] and ckpt["fixed_noise"].shape == (64, 100)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 30
    assert train_dcgan(tiny(tiny_set, tmp_path, max_steps=2), progress=False).run_dir.name == "00002-dcgan"


def _state(run) -> dict:
    ckpt = load_checkpoint(run / "checkpoints" / "latest.pt")
    return {**{f"g.{k}": v for k, v in ckpt["generator"].items()},
            **{f"d.{k}": v for k, v in ckpt["discriminator"].items()},
            **{f"og.{k}": v for k, v in ckpt["opt_g"]["state"][0].items()}}


@pytest.mark.parametrize("augment", ["none", "diffaug"])
def test_exact_resume(tiny_set, tmp_path, augment):
    straight = train_dcgan(tiny(tiny_set, tmp_path / "a", max_steps=14, augment=augment), progress=False)
    first = train_dcgan(tiny(tiny_set, tmp_path / "b", max_steps=8, augment=augment), progress=False)
    resumed = train_dcgan(tiny(tiny_set, tmp_path / "b", max_steps=14, augment=augment), resume=first.run_dir,
                          progress=False)
    assert json.loads((resumed.run_dir / "summary.json").read_text())["augment"].startswith(augment)
    assert resumed.run_dir == first.run_dir and resumed.steps == 14
    a, b = _state(straight.run_dir), _state(resumed.run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(ValueError, match="model changed"):
        train_dcgan(tiny(tiny_set, tmp_path / "b", max_steps=16, g_width=64), resume=first.run_dir, progress=False)


def test_streamed_data_feeds_the_same_batches(tiny_set, tmp_path):
    mem = train_dcgan(tiny(tiny_set, tmp_path / "m", data="memory"), progress=False)
    stream = train_dcgan(tiny(tiny_set, tmp_path / "s", data="stream", workers=0), progress=False)
    a, b = _state(mem.run_dir), _state(stream.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_untrusted_checkpoint_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"generator": {}, "x": Payload()}, path)
    with pytest.raises(ValueError, match="refused"):
        load_checkpoint(path)
    assert not (tmp_path / "pwned").exists()


_DDP = textwrap.dedent("""
    import hashlib, sys
    import torch
    import torch.distributed as dist
    from training import TrainConfig, train_dcgan
    dist.init_process_group("gloo")
    cfg = TrainConfig(dataset=sys.argv[1], image_size=32, g_width=32, d_width=32, batch_size=16, max_steps=6,
                      sample_every=3, checkpoint_every=3, runs_dir=sys.argv[2], device="cpu")
    s = train_dcgan(cfg, progress=False)
    dist.barrier()
    weights = torch.cat([p.detach().flatten() for p in [*s.generator.parameters(), *s.discriminator.parameters()]])
    digest = hashlib.sha256(weights.numpy().tobytes()).hexdigest()[:16]
    with open(f"{sys.argv[2]}-rank{dist.get_rank()}.txt", "w") as fh:
        fh.write(f"{s.run_dir} {s.steps} {digest}")
    dist.destroy_process_group()
""")


def test_ddp_with_gloo_on_two_cpu_processes(tiny_set, tmp_path):
    script = tmp_path / "ddp.py"
    script.write_text(_DDP)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    r = subprocess.run([*torchrun, str(script), str(tiny_set), str(tmp_path / "runs")], capture_output=True,
                       text=True, env=env, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    reports = [(tmp_path / f"runs-rank{k}.txt").read_text() for k in (0, 1)]
    # one run directory, the same steps, and the same weights in both processes (gradients all-reduced)
    assert reports[0] == reports[1] and reports[0].split()[1] == "6"
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1
    config = json.loads((runs[0] / "config.json").read_text())
    assert config["world_size"] == 2 and config["batch_size"] == 16  # 8 per process
    assert load_checkpoint(runs[0] / "checkpoints" / "latest.pt")["step"] == 6


def test_tools_generate_interpolate_arithmetic_memorisation(tiny_set, tmp_path):
    run = train_dcgan(tiny(tiny_set, tmp_path, max_steps=6), progress=False).run_dir
    from wikifaces.fixtures.samples import load_rgb

    imgs = generate_grid(run, tmp_path / "g.png", n=16, seed=3)
    assert imgs.shape == (16, 32, 32, 3) and load_rgb(tmp_path / "g.png").shape[0] >= 4 * 96
    walk = interpolate(run, tmp_path / "i.png", rows=3, steps=5)
    assert walk.shape[0] == 15
    # a straight walk: the middle image of each row lies between its ends
    assert np.abs(walk[2].astype(int) - walk[0]).mean() > 0 or np.array_equal(walk[0], walk[4])
    res = arithmetic(run, tmp_path / "a.png", [0, 1], [2], [3, 4], seed=3, n=16)
    assert res.shape[0] == 3 + 1 + 7
    with pytest.raises(ValueError, match="group B"):
        arithmetic(run, tmp_path / "a.png", [0], [99], [1], seed=3, n=16)
    dists = memorisation(run, tiny_set, tmp_path / "m.png", n=4, neighbours=2)
    assert len(dists) == 4 and all(0 <= a <= b for a, b in dists)
    assert load_rgb(tmp_path / "m.png").shape[0] >= 4 * 64


def test_fid_names_the_missing_weights():
    from training.evaluate import INCEPTION_WEIGHTS, fid

    if INCEPTION_WEIGHTS.exists():
        pytest.skip("Inception weights are present on this machine")
    with pytest.raises(FileNotFoundError, match="weights-inception-2015-12-05"):
        fid("a", "b")


def test_representation_pipeline_on_a_subset(tmp_path):
    from training.evaluate import FASHION, representation_test

    if not FASHION.exists():
        from .conftest import require_photos

        require_photos([], 1, "Fashion-MNIST (Debian's dataset-fashion-mnist)")
    r = representation_test(tmp_path, per_class=(20, None), draws=2, test=600, train_images=1200, epochs=1,
                            width=32, kmeans_k=50, progress=False, batch_size=64)
    few, every = r.regimes
    assert (few.name, few.labels, every.name, every.labels) == ("20 per class", 200, "all labels", 1200)
    assert all(len(v) == 2 for v in few.accuracy.values()) and all(len(v) == 1 for v in every.accuracy.values())
    assert r.test_images == 600
    assert r.dcgan_features == 4 * 4 * (8 + 16 + 32)  # every block max-pooled to 4x4
    for features in ("dcgan", "kmeans", "pixels"):  # chance is 0.1
        assert few.mean(features) > 0.35 and every.mean(features) > 0.5
        assert every.mean(features) > few.mean(features) - 0.05  # more labels do not hurt
        assert set(few.c[features]) <= {1e-3, 1e-2, 1e-1}


def test_cli_train_and_tools(tiny_set, tmp_path):
    runner = CliRunner()
    r = runner.invoke(app, ["train", str(tiny_set), "--image-size", "32", "--g-width", "32", "--d-width", "32",
                            "--batch-size", "16", "--max-steps", "4", "--root", str(tmp_path)])
    assert r.exit_code == 0, r.output
    run = next(p for p in (tmp_path / "runs").iterdir() if p.is_dir())
    r = runner.invoke(app, ["generate", str(run), "--n", "9"])
    assert r.exit_code == 0 and (run / "generate-seed0.png").exists()
    r = runner.invoke(app, ["arithmetic", str(run), "--a", "0,1", "--b", "x", "--c", "2"])
    assert r.exit_code == 2 and "comma-separated" in r.output
    r = runner.invoke(app, ["train", str(tiny_set), "--image-size", "48"])
    assert r.exit_code == 2 and "image_size" in r.output
