"""The contract between a model page and the library, and what every model shares.

A model page subclasses :class:`Autoencoder`. What it **must** define:

* ``name``: the model's id in configs and result folders (``"vae"``, ``"hebae"``, ...);
* ``loss(x)``: a dict with ``"objective"``, the scalar the optimiser minimises, and its named
  terms as scalars (``"rec"``, ``"reg"``, ...), which the history records per epoch.

What it **may** define (the defaults suit the VAE, the WAE and HEBAE):

* ``heads``: 2 when the encoder outputs a second value per dimension (a log variance or log
  scale), 1 for a deterministic encoder;
* ``default_lam``: the regulariser weight λ per dataset when a reader gives none;
* ``options``: model-specific parameters, ``{name: allowed values}``, the first value the default;
* ``batch_statistics``: True when ``loss`` uses statistics of the batch (then batches need >= 2);
* ``check(config)`` (classmethod): refuse a config the model cannot train with (``ValueError``);
* ``posterior(x)``: q(z | x) as an ``Independent(Normal)`` or ``MultivariateNormal``. A model
  with a posterior and a normalised likelihood has an ELBO and an importance-weighted
  log-likelihood, which the measurements then report;
* ``sample_prior(n, generator)``: codes to decode into samples (default N(0, I)); every sample
  grid and FID draws through it, and ``prior_label`` names it in figures;
* ``log_prior(z)``: log p(z) of the prior the model is trained with (default N(0, I)); the
  importance-weighted log-likelihood uses it, so a model with a learned prior (VampPrior) is
  scored under its own;
* ``param_groups()``: the optimiser's parameter groups (default: every parameter in one group),
  so a page can, for instance, give only the decoder weight decay;
* ``after_training(train_images, device)``: a step after the main training and before any
  measurement (default: none), such as the second stage of a two-stage VAE. Whatever it fits
  must live in submodules created in ``__init__``, so the checkpoint stores it.
"""

from __future__ import annotations

import torch
from torch import nn

from . import nets
from .bounds import bernoulli_nll, standard_normal_logpdf

LIKELIHOODS = ("bernoulli", "mse")


class Autoencoder(nn.Module):
    """Encoder and decoder of the paper's Appendix B for ``config["dataset"]``.

    Images come in as floats in [0, 1]. With the ``bernoulli`` likelihood (MNIST) the decoder
    returns logits and images are their sigmoid. With ``mse`` (CelebA) the model works on the
    official code's scale: inputs mapped to [−1, 1], a tanh decoder output, and the squared
    error averaged over pixel values on that scale; images are mapped back to [0, 1] for display.
    """

    name: str = ""
    heads = 2
    default_lam = {"mnist": 1.0, "celeba": 1e-3, "synthetic": 1.0}
    options: dict[str, tuple] = {}
    batch_statistics = False
    prior_label = "N(0, I)"
    posterior = None  # a page overrides it with a method when its model has a posterior

    def __init__(self, config: dict, image_shape: tuple[int, int, int]):
        super().__init__()
        self.config = dict(config)
        self.latent_dim = int(config["latent_dim"])
        self.lam = float(config["lam"])
        self.likelihood = config.get("likelihood", "bernoulli")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {self.likelihood!r}")
        self.image_shape = tuple(image_shape)
        widths = {"channels": tuple(config["conv_channels"])} if config.get("conv_channels") else {}
        net = nets.for_dataset(config["dataset"], image_shape, self.latent_dim, self.heads, **widths)
        self.encoder, self.decoder = nets.build(net)

    @classmethod
    def check(cls, config: dict) -> None:
        """Raise ``ValueError`` for a config this model cannot train with (default: accept)."""

    # ------------------------------------------------------------------ what a page may override

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` codes from the prior samples are drawn from: N(0, I), drawn on the CPU so that
        a seed gives the same codes on every device."""
        return torch.randn(n, self.latent_dim, generator=generator)

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) summed over the last dimension: N(0, I) unless a page defines its own prior."""
        return standard_normal_logpdf(z)

    def after_training(self, train_images: torch.Tensor, device) -> None:
        """Fit what comes after the main training (default: nothing)."""

    def param_groups(self) -> list[dict]:
        """Parameter groups for the optimiser: all parameters, no weight decay."""
        return [{"params": list(self.parameters())}]

    @property
    def has_posterior(self) -> bool:
        return type(self).posterior is not None

    @property
    def has_likelihood(self) -> bool:
        """Whether the reconstruction term is a normalised −log p(x | z), so an ELBO exists."""
        return self.likelihood == "bernoulli"

    @property
    def has_elbo(self) -> bool:
        return self.has_posterior and self.has_likelihood

    # ------------------------------------------------------------------------ shared machinery

    def _inputs(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * x - 1.0 if self.likelihood == "mse" else x

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """μ(x) and, for two-headed encoders, the second head (a log variance or log scale)."""
        h = self.encoder(self._inputs(x))
        if self.heads == 1:
            return h, None
        mu, second = h.chunk(2, dim=-1)
        return mu, second

    def encode_mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode(x)[0]

    def reconstruction_nll(self, logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The reconstruction term per example, computed in float32 whatever the autocast state.

        ``bernoulli``: −log p(x | z), the cross-entropy summed over pixels. ``mse``: the official
        CelebA loss, the squared error between tanh outputs and the image on [−1, 1], averaged
        over pixel values (not a normalised likelihood, but it keeps λ on the official scale).
        """
        logits = logits.float()
        if self.likelihood == "bernoulli":
            return bernoulli_nll(logits, x)
        return (torch.tanh(logits) - self._inputs(x)).pow(2).flatten(1).mean(1)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) for z of shape (..., m, k); returns shape (..., m)."""
        lead = z.shape[:-1]
        logits = self.decoder(z.reshape(-1, self.latent_dim))
        target = x.expand(*lead[:-1], *x.shape).reshape(logits.shape)
        return -self.reconstruction_nll(logits, target).reshape(lead)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] for codes z: pixel means (Bernoulli) or the tanh output mapped back."""
        out = self.decoder(z).float()
        return torch.sigmoid(out) if self.likelihood == "bernoulli" else (torch.tanh(out) + 1.0) / 2.0

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: the deterministic reconstruction of x."""
        return self.decode(self.encode_mean(x))
