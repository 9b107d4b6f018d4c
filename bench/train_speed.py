"""Training throughput: our trainer versus pytorch/examples' dcgan/main.py, in one run.

The example's model and loop are rebuilt here as that file writes them (netG/netD, Sigmoid +
BCELoss, an ImageFolder of JPEG files through a DataLoader with its default 2 workers and its
Resize/CenterCrop/ToTensor/Normalize transforms), at the same width as ours (ngf = width / 8).
Ours reads the same images from our shards, decoded once into memory. Same batch (128), same
64x64 images, same device; both with `--augment none` semantics (the paper's step).

FLOPs per step are counted with torch.utils.flop_counter on one of our steps (D on real, G, D on
fake, D on fake again for G; forward and backward), not estimated by hand; achieved FLOP/s is
that times steps per second. On a GPU the fraction of the GPU's dense bf16 peak is printed.

On this CPU the convolutions dominate, so the target is that we are never slower (ratio >= 1)
and that our data path costs under 5 % of the step time. On a GPU, where the example is bound by
JPEG decoding in 2 workers and synchronises every step, the target at the paper's width (1024 at
4x4) and batch 128 is >= 5x the example and >= 25 % of bf16 peak.

    .venv/bin/python bench/train_speed.py [--steps 6] [--images 1536] [--width 512] [--compile]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
import torchvision.datasets as dset
import torchvision.transforms as transforms
from PIL import Image
from torch import nn

from shards import write_shards
from training import TrainConfig, train_dcgan
from wikifaces.fixtures.samples import random_crops

NZ, NC = 100, 3
# dense bf16 tensor-core peak, FLOP/s, from the vendors' data sheets (SXM parts; no sparsity)
BF16_PEAK = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12, "A10": 125e12,
             "RTX 4090": 165e12, "B200": 2250e12}


class ExampleG(nn.Module):  # pytorch/examples dcgan/main.py, as written there
    def __init__(self, ngf: int = 64) -> None:
        super().__init__()
        NGF = ngf
        self.main = nn.Sequential(
            nn.ConvTranspose2d(NZ, NGF * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(NGF * 8), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 8, NGF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 4), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 2), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF), nn.ReLU(True),
            nn.ConvTranspose2d(NGF, NC, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


class ExampleD(nn.Module):
    def __init__(self, ndf: int = 64) -> None:
        super().__init__()
        NDF = ndf
        self.main = nn.Sequential(
            nn.Conv2d(NC, NDF, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 2), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 4), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 4, NDF * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 8), nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(NDF * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x).view(-1, 1).squeeze(1)


def weights_init(m: nn.Module) -> None:
    name = m.__class__.__name__
    if name.find("Conv") != -1:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif name.find("BatchNorm") != -1:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def example(folder: Path, steps: int, device: torch.device, ngf: int) -> tuple[float, float]:
    """Images per second of the example's loop, and the share of time waiting for data."""
    dataset = dset.ImageFolder(root=str(folder), transform=transforms.Compose([
        transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor(),
        transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]))
    loader = torch.utils.data.DataLoader(dataset, batch_size=128, shuffle=True, num_workers=2)
    g, d = ExampleG(ngf).to(device), ExampleD(ngf).to(device)
    g.apply(weights_init)
    d.apply(weights_init)
    criterion = nn.BCELoss()
    opt_d = torch.optim.Adam(d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_g = torch.optim.Adam(g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    done, images, waited, t_start = 0, 0, 0.0, None
    while done < steps + 1:
        it = iter(loader)
        while done < steps + 1:
            t0 = time.perf_counter()
            batch = next(it, None)
            if batch is None:
                break
            if done == 1:  # the first step (workers starting, allocations) is outside the clock
                t_start, images, waited = time.perf_counter(), 0, 0.0
            real = batch[0].to(device)
            waited += time.perf_counter() - t0
            b = real.size(0)
            d.zero_grad()
            err_real = criterion(d(real), torch.full((b,), 1.0, device=device))
            err_real.backward()
            noise = torch.randn(b, NZ, 1, 1, device=device)
            fake = g(noise)
            err_fake = criterion(d(fake.detach()), torch.full((b,), 0.0, device=device))
            err_fake.backward()
            opt_d.step()
            g.zero_grad()
            err_g = criterion(d(fake), torch.full((b,), 1.0, device=device))
            err_g.backward()
            opt_g.step()
            images += b
            done += 1
    if device.type == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t_start
    return images / elapsed, waited / elapsed


def step_flops(config: TrainConfig, device: torch.device) -> int:
    """FLOPs of one of our training steps, counted by torch.utils.flop_counter."""
    from torch.utils.flop_counter import FlopCounterMode

    from training.train import setup_run, train_step

    run = setup_run(config.model_copy(update={"max_steps": 1}), None, None, None, False)
    real = torch.rand(config.batch_size, 3, 64, 64, device=device) * 2 - 1
    z = torch.rand(config.batch_size, config.z_dim, device=device) * 2 - 1
    with FlopCounterMode(display=False) as counter:
        train_step(run, real, z)
    return counter.get_total_flops()


def peak_bf16(name: str) -> float | None:
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--images", type=int, default=1536)
    ap.add_argument("--width", type=int, default=512, help="channels at 4x4 (the paper: 1024; the example: 512)")
    ap.add_argument("--compile", action="store_true", help="torch.compile our models")
    args = ap.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.benchmark = True
    with tempfile.TemporaryDirectory() as d:
        records = []
        folder = Path(d) / "imagefolder" / "all"
        folder.mkdir(parents=True)
        for i, (img, meta) in enumerate(random_crops(64, -(-args.images // 11), seed=2)):
            if i == args.images:
                break
            Image.fromarray(img).save(folder / f"{i:06d}.jpg", quality=95)
            records.append((img, meta))
        write_shards(records, Path(d) / "shards", name="bench", image_size=(64, 64), encoding="jpeg")
        theirs, theirs_wait = example(folder.parent, args.steps, device, args.width // 8)
        config = TrainConfig(dataset=Path(d) / "shards", g_width=args.width, d_width=args.width, batch_size=128,
                             max_steps=args.steps + 1, sample_every=10_000, checkpoint_every=10_000,
                             runs_dir=Path(d) / "runs", flip=True, augment="none", compile=args.compile)
        flops = step_flops(config, device)
        # one warm-up step outside the clock, as for the example
        train_dcgan(config.model_copy(update={"max_steps": 1}), progress=False)
        s = train_dcgan(config.model_copy(update={"max_steps": args.steps}), progress=False)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU (this machine, 2 cores)"
    print(f"device: {name}; 64x64 images, batch 128, width {args.width // 8} ({args.width} at 4x4), "
          f"{args.steps} timed steps each")
    print(f"{'trainer':<58}{'images/s':>10}{'data share':>12}")
    print(f"{'pytorch/examples dcgan (ImageFolder JPEG, 2 workers)':<58}{theirs:>10.1f}{theirs_wait:>11.1%}")
    print(f"{'wikifaces (shards decoded once into memory)':<58}{s.images_per_second:>10.1f}{s.data_fraction:>11.1%}")
    achieved = flops * s.images_per_second / 128
    print(f"FLOPs per step (torch.utils.flop_counter): {flops / 1e9:.1f} GFLOP; achieved {achieved / 1e12:.3f} "
          "TFLOP/s")
    if device.type == "cpu":
        print("GPU figure: not measured on this machine (no GPU)")
    else:
        peak = peak_bf16(name)
        print(f"fraction of bf16 peak: {achieved / peak:.3f}" if peak else
              f"fraction of bf16 peak: unknown peak for {name}")
    print(f"example images per second: {theirs:.1f}")
    print(f"images per second: {s.images_per_second:.1f}")
    print(f"img/s: {s.images_per_second:.1f}")
    print(f"gflop per step: {flops / 1e9:.1f}")
    print(f"data share of step time: {s.data_fraction:.3f}")
    print(f"ratio: {s.images_per_second / theirs:.2f}")


if __name__ == "__main__":
    main()
