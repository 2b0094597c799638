"""The contract between a model page and the library, and what every model shares.

A model page subclasses :class:`Autoencoder`. What it **must** define:

* ``name``: the model's id in configs and result folders (``"vae"``, ``"hebae"``, ...);
* ``loss(x)``: a dict with ``"objective"``, the scalar the optimiser minimises, and its named
  terms as scalars (``"rec"``, ``"reg"``, ...), which the history records per epoch.

What it **may** define (the defaults suit the VAE, the WAE and HEBAE):

* ``heads``: 2 when the encoder outputs a second value per dimension (a log variance or log
  scale), 1 for a deterministic encoder;
* ``default_lam``: the regulariser weight λ per dataset when a reader gives none;
* ``options``: model-specific parameters, ``{name: allowed values}``, the first value the default
  (or, for an option the paper's settings already put in the config, such as the VAE's
  ``likelihood``, that setting, so declaring it changes no default config);
* ``batch_statistics``: True when ``loss`` uses statistics of the batch (then batches need >= 2);
* ``check(config)`` (classmethod): refuse a config the model cannot train with (``ValueError``);
* ``posterior(x)``: q(z | x) as an ``Independent(Normal)`` or ``MultivariateNormal``, or any
  distribution with ``rsample`` and ``log_prob`` (a flow's: its KL is then estimated from draws
  and its index-code MI is NaN). A model
  with a posterior and a normalised likelihood has an ELBO and an importance-weighted
  log-likelihood, which the measurements then report;
* ``sample_prior(n, generator)``: codes to decode into samples (default N(0, I)); every sample
  grid and FID draws through it, and ``prior_label`` names it in figures;
* ``log_prior(z)``: log p(z) of the prior the model is trained with (default N(0, I)); the
  importance-weighted log-likelihood uses it, so a model with a learned prior (VampPrior) is
  scored under its own;
* ``param_groups()``: the optimiser's parameter groups (default: every parameter in one group),
  so a page can, for instance, give only the decoder weight decay;
* ``measured_arrays()``: a dict of arrays the run stores beside the measurements (default:
  none), such as MaskAAE's trained mask, so a page can show them without the checkpoint, which
  is never committed;
* ``after_training(train_images, device)``: a step after the main training and before any
  measurement (default: none), such as the second stage of a two-stage VAE. Whatever it fits
  must live in submodules created in ``__init__``, so the checkpoint stores it.

**Adversarial training** (AAE, WAE-GAN, MaskAAE, FlexAE). A model **may** also define, together:

* ``self.adversary``: an ``nn.Module`` built in ``__init__`` (so the checkpoint stores it), such as
  a discriminator or critic on the latent space;
* ``adversary_loss(x)``: a dict like ``loss``'s, ``"objective"`` the scalar the *second*
  optimiser minimises plus named scalar terms. The history records them per epoch as
  ``adv_<term>`` (``adv_objective``, ...), epoch means like the main terms.

The second optimiser is an Adam over ``self.adversary.parameters()`` only, at ``adversary_lr``
(None: the run's lr; a class attribute, or set in ``__init__`` when it depends on the config)
with ``adversary_betas`` (default (0.5, 0.999)); the run's learning-rate schedule scales it as it
scales the main one, and ``reset_adam`` renews both. Per batch the loop first takes one step of
it on ``adversary_loss(x)``, then the main step on ``loss(x)``, on the same batch. Each step's
gradients reach only its own optimiser's parameters (the loop differentiates with respect to
them alone), so ``adversary_loss`` may use the encoder freely and ``loss`` may use the adversary
freely; the main optimiser's groups (``param_groups``, whose default is ``main_parameters()``,
every parameter but the adversary's) must not hold the adversary's parameters. A non-finite adversary objective stops the run, naming
epoch and batch. ``adversary_collapse`` (default None: off) is the model's divergence test: when
the adversary's objective stays below it on *every* batch of an epoch the run stops with
:class:`hebae.train.AdversaryCollapseError`. It suits a discriminator trained with a
cross-entropy, which is ≥ 0 and near 0 only when it tells every code from every prior draw;
leave it None for a Wasserstein critic, whose objective has no floor. Adversarial models always
train alone (:mod:`hebae.batched` never stacks them); ``has_adversary`` says whether a model is one.
"""

from __future__ import annotations

import torch
from torch import nn

from . import nets
from .bounds import bernoulli_nll, gaussian_nll, standard_normal_logpdf

# bernoulli: MNIST's; mse: the official CelebA loss; gaussian-fixed / gaussian-learned: a Gaussian
# decoder with one variance γ, fixed at 1 or learned (Dai and Wipf's, and the lecture's Table 1 rows).
LIKELIHOODS = ("bernoulli", "mse", "gaussian-fixed", "gaussian-learned")


class Autoencoder(nn.Module):
    """Encoder and decoder of the paper's Appendix B for ``config["dataset"]``.

    Images come in as floats in [0, 1]. With the ``bernoulli`` likelihood (MNIST) the decoder
    returns logits and images are their sigmoid. With ``mse`` (CelebA) the model works on the
    official code's scale: inputs mapped to [−1, 1], a tanh decoder output, and the squared
    error averaged over pixel values on that scale; images are mapped back to [0, 1] for display.
    With ``gaussian-fixed`` and ``gaussian-learned`` the decoder's sigmoid is the mean of a
    Gaussian of variance γ on the [0, 1] pixels: γ = 1, or ``exp(log_gamma)`` learned with the
    weights.
    """

    name: str = ""
    heads = 2
    default_lam = {"mnist": 1.0, "celeba": 1e-3, "synthetic": 1.0}
    options: dict[str, tuple] = {}
    batch_statistics = False
    prior_label = "N(0, I)"
    posterior = None  # a page overrides it with a method when its model has a posterior
    adversary_loss = None  # a page overrides it with a method when its model trains an adversary
    adversary_lr: float | None = None
    adversary_betas = (0.5, 0.999)
    adversary_collapse: float | None = None
    # Sizes that replace a profile's for this model, {profile: {settings dataset: {size: value}}}: a
    # model whose step costs ten times the VAE's may train its default run on less at a small
    # profile, so that a book built on a CPU can still afford it. They enter the config as any size.
    profile_sizes: dict[str, dict[str, dict]] = {}

    def __init__(self, config: dict, image_shape: tuple[int, int, int]):
        super().__init__()
        self.config = dict(config)
        self.latent_dim = int(config["latent_dim"])
        self.lam = float(config["lam"])
        self.likelihood = config.get("likelihood", "bernoulli")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {', '.join(LIKELIHOODS)}; got {self.likelihood!r}")
        if self.likelihood == "gaussian-learned":
            # Only this likelihood owns a parameter, so every other model's checkpoint keeps its keys.
            self.log_gamma = nn.Parameter(torch.zeros(()))
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
        """Parameter groups for the optimiser: every parameter but the adversary's, no weight decay."""
        return [{"params": self.main_parameters()}]

    def main_parameters(self) -> list[nn.Parameter]:
        """Every parameter the main optimiser trains: all but the adversary's."""
        adversary = getattr(self, "adversary", None)
        own = {id(p) for p in adversary.parameters()} if isinstance(adversary, nn.Module) else set()
        return [p for p in self.parameters() if id(p) not in own]

    @property
    def has_posterior(self) -> bool:
        return type(self).posterior is not None

    @property
    def has_adversary(self) -> bool:
        return type(self).adversary_loss is not None

    @property
    def has_likelihood(self) -> bool:
        """Whether the reconstruction term is a normalised −log p(x | z), so an ELBO exists."""
        return self.likelihood != "mse"

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
        ``gaussian-*``: −log N(x; sigmoid(logits), γ I) summed over pixels, a density on [0, 1].
        """
        logits = logits.float()
        if self.likelihood == "bernoulli":
            return bernoulli_nll(logits, x)
        if self.likelihood != "mse":
            return gaussian_nll(torch.sigmoid(logits), x, self.log_gamma_x)
        return (torch.tanh(logits) - self._inputs(x)).pow(2).flatten(1).mean(1)

    def log_likelihood(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """log p(x | z) for z of shape (..., m, k); returns shape (..., m)."""
        lead = z.shape[:-1]
        logits = self.decoder(z.reshape(-1, self.latent_dim))
        target = x.expand(*lead[:-1], *x.shape).reshape(logits.shape)
        return -self.reconstruction_nll(logits, target).reshape(lead)

    @property
    def log_gamma_x(self) -> torch.Tensor | float:
        """log γ of a Gaussian decoder: the learned parameter, or 0 (γ = 1) when fixed."""
        return self.log_gamma if self.likelihood == "gaussian-learned" else 0.0

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] for codes z: pixel means (Bernoulli, Gaussian) or the tanh output mapped back."""
        out = self.decoder(z).float()
        return (torch.tanh(out) + 1.0) / 2.0 if self.likelihood == "mse" else torch.sigmoid(out)

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Decode the posterior mean: the deterministic reconstruction of x."""
        return self.decode(self.encode_mean(x))
