"""What every model of the book shares: its networks, its decoder likelihood, and the
methods the training loop and the metrics call. The objectives themselves (``loss``) and the
posteriors (``posterior``) are written on the model pages of the book.
"""

from __future__ import annotations

import torch
from torch import nn

from . import nets
from .bounds import bernoulli_nll

LIKELIHOODS = ("bernoulli", "mse")


class Autoencoder(nn.Module):
    """Encoder and decoder of the paper's Appendix B for ``config["dataset"]``.

    ``heads = 2`` when the encoder also outputs a log scale (VAE, HEBAE), 1 when it is
    deterministic (WAE). The decoder returns logits; images are their sigmoid.
    """

    heads = 2

    def __init__(self, config: dict, image_shape: tuple[int, int, int]):
        super().__init__()
        self.config = dict(config)
        self.latent_dim = int(config["latent_dim"])
        self.lam = float(config["lam"])
        self.likelihood = config.get("likelihood", "bernoulli")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {self.likelihood!r}")
        self.image_shape = tuple(image_shape)
        widths = {"channels": tuple(config["conv_channels"])} if "conv_channels" in config else {}
        net = nets.for_dataset(config["dataset"], image_shape, self.latent_dim, self.heads, **widths)
        self.encoder, self.decoder = nets.build(net)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """μ(x) and, for two-headed encoders, the second head (a log variance or log scale)."""
        h = self.encoder(x)
        if self.heads == 1:
            return h, None
        mu, second = h.chunk(2, dim=-1)
        return mu, second

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    @property
    def has_likelihood(self) -> bool:
        """Whether the reconstruction term is a normalised −log p(x | z), so an ELBO exists."""
        return self.likelihood == "bernoulli"

    def reconstruction_nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction term per example: for ``bernoulli`` −log p(x | z), the cross-entropy
        summed over pixels; for ``mse`` the squared error averaged over pixels, the official
        code's CelebA loss (not a normalised likelihood, but it keeps λ on the official scale)."""
        if self.likelihood == "bernoulli":
            return bernoulli_nll(logits, x)
        return (torch.sigmoid(logits) - x).pow(2).flatten(1).mean(1)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) for z of shape (..., m, k); returns shape (..., m)."""
        lead = z.shape[:-1]
        logits = self.decoder(z.reshape(-1, self.latent_dim))
        target = x.expand(*lead[:-1], *x.shape).reshape(logits.shape)
        return -self.reconstruction_nll(logits, target).reshape(lead)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images (pixel means in [0, 1]) for codes z."""
        return torch.sigmoid(self.decoder(z))

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: the deterministic reconstruction of x."""
        return self.decode(self.encode_mean(x))
