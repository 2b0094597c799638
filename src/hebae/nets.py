"""The encoder and decoder networks of the paper's Appendix B, built from a small config.

* ``dense`` (MNIST): encoder x -> FC784 -> ReLU -> FC800 -> ReLU -> FC(k*p);
  decoder z -> FC800 -> ReLU -> FC800 -> ReLU -> FC(pixels).
* ``conv`` (CelebA, after the WAE paper): four 5x5 stride-2 convolutions with 128, 256, 512,
  1024 filters, each followed by batch norm and ReLU, then FC(k*p); the decoder maps z through
  FC, batch norm and ReLU to an 8x8x1024 map and mirrors the encoder with transposed
  convolutions 512, 256, 128, then a stride-1 transposed convolution to the image channels.
  As in the official code (``CelebA/CelebA_HEBAE.py``), which the paper's text does not
  detail: convolutions and the decoder's FC have no bias (batch norm follows each) and start
  from N(0, 0.02²) weights.

``p`` is 2 for models whose encoder also outputs a (log-)scale (VAE, HEBAE) and 1 for a
deterministic encoder (WAE). Decoders return logits; the model chooses the likelihood.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

ARCHS = ("dense", "conv")


@dataclass(frozen=True)
class NetConfig:
    arch: str
    image_shape: tuple[int, int, int]  # (C, H, W)
    latent_dim: int
    heads: int = 2  # p: outputs per latent dimension
    hidden: tuple[int, ...] = field(default=(784, 800))  # dense encoder widths
    decoder_hidden: tuple[int, ...] = field(default=(800, 800))  # dense decoder widths
    channels: tuple[int, ...] = field(default=(128, 256, 512, 1024))  # conv encoder filters

    def __post_init__(self):
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {', '.join(ARCHS)}; got {self.arch!r}")
        if self.latent_dim < 1:
            raise ValueError(f"latent_dim must be >= 1; got {self.latent_dim}")
        if self.heads not in (1, 2):
            raise ValueError(f"heads must be 1 or 2; got {self.heads}")
        if self.arch == "conv":
            c, h, w = self.image_shape
            n = len(self.channels)
            if h != w or h % 2**n:
                raise ValueError(
                    f"image_shape must be square with side divisible by {2**n} for the conv "
                    f"nets; got {self.image_shape}"
                )


def build(config: NetConfig) -> tuple[nn.Module, nn.Module]:
    """Encoder and decoder for ``config``."""
    if config.arch == "dense":
        return DenseEncoder(config), DenseDecoder(config)
    return ConvEncoder(config), ConvDecoder(config)


def mlp(sizes: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class DenseEncoder(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        pixels = math.prod(config.image_shape)
        self.net = mlp([pixels, *config.hidden, config.latent_dim * config.heads])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class DenseDecoder(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        self.image_shape = tuple(config.image_shape)
        self.net = mlp([config.latent_dim, *config.decoder_hidden, math.prod(self.image_shape)])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(1, self.image_shape)


def _conv_block(conv: nn.Module, out: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(out), nn.ReLU(inplace=True)]


def _official_init(module: nn.Module) -> None:
    """N(0, 0.02²) weights for every convolution and bias-free linear layer, as the official code."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) or (isinstance(m, nn.Linear) and m.bias is None):
            nn.init.normal_(m.weight, 0.0, 0.02)


class ConvEncoder(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        c, side, _ = config.image_shape
        layers: list[nn.Module] = []
        for out in config.channels:
            layers += _conv_block(nn.Conv2d(c, out, 5, stride=2, padding=2, bias=False), out)
            c = out
        self.features = nn.Sequential(*layers)
        final_side = side // 2 ** len(config.channels)
        self.head = nn.Linear(c * final_side**2, config.latent_dim * config.heads)
        _official_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


class ConvDecoder(nn.Module):
    def __init__(self, config: NetConfig):
        super().__init__()
        out_channels, side, _ = config.image_shape
        widths = list(config.channels)[::-1]  # 1024, 512, 256, 128
        ups = len(widths) - 1
        self.start = (widths[0], side // 2**ups, side // 2**ups)
        units = math.prod(self.start)
        self.fc = nn.Sequential(nn.Linear(config.latent_dim, units, bias=False), nn.BatchNorm1d(units), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            up = nn.ConvTranspose2d(a, b, 5, stride=2, padding=2, output_padding=1, bias=False)
            layers += _conv_block(up, b)
        layers.append(nn.ConvTranspose2d(widths[-1], out_channels, 5, stride=1, padding=2, bias=False))
        self.net = nn.Sequential(*layers)
        _official_init(self)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).unflatten(1, self.start))


def for_dataset(dataset: str, image_shape, latent_dim: int, heads: int, **overrides) -> NetConfig:
    """The paper's network for a dataset: dense for MNIST and synthetic data, conv for CelebA."""
    arch = "conv" if dataset == "celeba" else "dense"
    return NetConfig(arch=arch, image_shape=tuple(image_shape), latent_dim=latent_dim, heads=heads, **overrides)
