"""What the tests of the amortisation model pages share: a page's class built small and seeded,
in float64, and images of one small shape."""

import torch

from hebae import experiment

SHAPE = (1, 8, 8)


def build(cls, dtype=torch.float64, latent_dim=3, **options):
    config, _ = experiment.configure(cls, dataset="synthetic", latent_dim=latent_dim, profile="smoke", **options)
    torch.manual_seed(0)
    return cls(config, SHAPE).to(dtype)


def images(n=5, dtype=torch.float64):
    return torch.rand(n, *SHAPE, generator=torch.Generator().manual_seed(1), dtype=dtype)
