"""The DCGAN generator and discriminator, as the paper specifies them.

G: z (uniform on [-1, 1]) is projected to 4x4 x g_width, then stride-2 fractionally strided
convolutions double the size until the image size, halving the channels; BatchNorm and ReLU
everywhere but the output layer, which is a tanh. D mirrors it with stride-2 convolutions and
LeakyReLU(0.2), BatchNorm everywhere but the input layer, no pooling and no hidden fully
connected layer; the last 4x4 map is flattened into one logit. Weights are N(0, 0.02), BatchNorm
scales N(1, 0.02).

Shapes for 64x64 and the paper's width (g_width = d_width = 1024):
  G: z 100 -> 1024x4x4 -> 512x8x8 -> 256x16x16 -> 128x32x32 -> 3x64x64
  D: 3x64x64 -> 128x32x32 -> 256x16x16 -> 512x8x8 -> 1024x4x4 -> 1 logit
"""

from __future__ import annotations

import torch
from torch import nn

BLOCKS = {32: 3, 64: 4, 128: 5}  # stride-2 layers between 4x4 and the image size


def _up(cin: int, cout: int, kernel: int) -> nn.ConvTranspose2d:
    pad = (kernel - 1) // 2  # 4 -> 1, 5 -> 2 (then output_padding 1 gives exact doubling)
    return nn.ConvTranspose2d(cin, cout, kernel, 2, pad, output_padding=kernel - 4, bias=False)


def _down(cin: int, cout: int, kernel: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel, 2, (kernel - 1) // 2, bias=False)


class Generator(nn.Module):
    def __init__(self, image_size: int = 64, z_dim: int = 100, width: int = 1024, channels: int = 3,
                 kernel: int = 4) -> None:
        super().__init__()
        n = BLOCKS[image_size]
        self.z_dim = z_dim
        layers: list[nn.Module] = [
            # the projection: a 4x4 transposed convolution of a 1x1 input is a matrix multiply
            nn.ConvTranspose2d(z_dim, width, 4, 1, 0, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
        ]
        c = width
        for _ in range(n - 1):
            layers += [_up(c, c // 2, kernel), nn.BatchNorm2d(c // 2), nn.ReLU(True)]
            c //= 2
        layers += [_up(c, channels, kernel), nn.Tanh()]  # no BatchNorm on the output
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.z_dim, 1, 1))


class Discriminator(nn.Module):
    def __init__(self, image_size: int = 64, width: int = 1024, channels: int = 3, kernel: int = 4) -> None:
        super().__init__()
        n = BLOCKS[image_size]
        c = width >> (n - 1)
        layers: list[nn.Module] = [_down(channels, c, kernel), nn.LeakyReLU(0.2, True)]  # no BatchNorm on the input
        for _ in range(n - 1):
            layers += [_down(c, c * 2, kernel), nn.BatchNorm2d(c * 2), nn.LeakyReLU(0.2, True)]
            c *= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(c, 1, 4, 1, 0, bias=False)  # the flattened 4x4 map into one logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x)).view(-1)

    def feature_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every convolutional block (after its activation): the features of the
        paper's representation test."""
        maps = []
        for layer in self.features:
            x = layer(x)
            if isinstance(layer, nn.LeakyReLU):
                maps.append(x)
        return maps


def init_weights(module: nn.Module) -> None:
    """N(0, 0.02) for convolutions; N(1, 0.02) scale and zero shift for BatchNorm."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def sample_z(n: int, z_dim: int, generator: torch.Generator | None = None, device: str | torch.device = "cpu"
             ) -> torch.Tensor:
    """z uniform on [-1, 1], as in the paper."""
    return torch.rand(n, z_dim, generator=generator, device="cpu").mul_(2).sub_(1).to(device)


def build_models(image_size: int, z_dim: int, g_width: int, d_width: int, channels: int, kernel: int
                 ) -> tuple[Generator, Discriminator]:
    g = Generator(image_size, z_dim, g_width, channels, kernel)
    d = Discriminator(image_size, d_width, channels, kernel)
    g.apply(init_weights)
    d.apply(init_weights)
    return g, d
