"""The models as the book defines them (loaded from the pages' ``model`` cells)."""

import json
import math
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from hebae import bounds, experiment, metrics, profiles, runs
from pages import TABLE, classes

SHAPE = (1, 2, 2)  # four pixels


@pytest.fixture(scope="module")
def models():
    return {m.cls: classes()[m.name] for m in TABLE}


def _config(model, **kw):
    config, _ = experiment.configure(classes()[model], dataset="synthetic", latent_dim=2, batch_size=4, **kw)
    return config


class Fixed(nn.Module):
    """Stands in for an encoder or decoder: returns a fixed tensor whatever the input (a leading
    dimension of 1 is broadcast over the batch)."""

    def __init__(self, value):
        super().__init__()
        self.value = nn.Parameter(torch.as_tensor(value, dtype=torch.float32))

    def forward(self, x):
        return self.value.expand(x.shape[0], *self.value.shape[1:]) if self.value.shape[0] == 1 else self.value


X = torch.tensor([[1.0, 0.0, 1.0, 0.0]] * 4).reshape(4, *SHAPE)
LOGITS = torch.tensor([[[[0.0, 1.0], [2.0, -1.0]]]])
# Bernoulli NLL of X under LOGITS, pixel by pixel: log(1+e^-l) where x = 1, log(1+e^l) where x = 0.
REC = math.log(2) + math.log(1 + math.e) + math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))


def test_vae_loss_against_hand_computation(models):
    vae = models["VAE"](_config("vae", lam=0.5), SHAPE)
    mu, logvar = [1.0, 0.0], [0.0, math.log(4.0)]
    vae.encoder, vae.decoder = Fixed([mu + logvar]), Fixed(LOGITS)
    terms = vae.loss(X)
    kl = 0.5 * ((1 + 1 - 1 - 0) + (4 + 0 - 1 - math.log(4)))
    assert terms["rec"].item() == pytest.approx(REC, rel=1e-6)
    assert terms["reg"].item() == pytest.approx(kl, rel=1e-6)
    assert terms["objective"].item() == pytest.approx(REC + 0.5 * kl, rel=1e-6)


@pytest.mark.parametrize("reparam", ["cholesky", "diagonal"])
def test_hebae_regulariser_against_hand_computation(models, reparam):
    hebae = models["HEBAE"](_config("hebae", lam=2.0, reparam=reparam), SHAPE)
    # Means offset by β = (1, 1) with batch covariance diag(0.5, 2) (dividing by m = 4).
    mu = torch.tensor([[1.0, 0.0], [-1.0, 0.0], [0.0, 2.0], [0.0, -2.0]]) + 1.0
    hebae.encoder, hebae.decoder = Fixed(torch.cat([mu, torch.zeros(4, 2)], 1)), Fixed(LOGITS)
    terms = hebae.loss(X)
    reg = 0.5 * (0.5 + 2.0 - 2 - math.log(0.5 * 2.0)) + 0.5 * (1 + 1)
    assert terms["reg"].item() == pytest.approx(reg, rel=1e-5)
    assert terms["rec"].item() == pytest.approx(REC, rel=1e-6)
    assert terms["objective"].item() == pytest.approx(REC + 2.0 * reg, rel=1e-5)
    # Training updates the running Σ̂ that the test-time posterior uses.
    assert hebae.running_sigma[1, 1] > 1.0


def test_wae_loss_against_hand_computation(models):
    wae = models["WAE"](_config("wae", lam=3.0), SHAPE)
    codes = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    wae.encoder, wae.decoder = Fixed(codes), Fixed(LOGITS)
    torch.manual_seed(0)
    prior = torch.randn(4, 2)
    torch.manual_seed(0)
    terms = wae.loss(X)
    assert terms["rec"].item() == pytest.approx(REC, rel=1e-6)
    assert terms["reg"].item() == pytest.approx(bounds.mmd_imq(codes, prior).item(), rel=1e-6)
    assert terms["objective"].item() == pytest.approx(REC + 3.0 * terms["reg"].item(), rel=1e-6)


def test_mmd_imq_by_hand():
    a = torch.tensor([[0.0], [1.0]])
    kappa1 = sum(2 * s / (2 * s + 1) for s in (0.1, 0.2, 0.5, 1, 2, 5, 10))  # k = 1, distance² 1
    # Unbiased estimate for two identical sets: (2κ₁ + 2κ₁)/2 − 2(7 + 7 + 2κ₁)/4 = κ₁ − 7.
    assert bounds.mmd_imq(a, a).item() == pytest.approx(kappa1 - 7, rel=1e-6)
    far = bounds.mmd_imq(torch.randn(200, 2), torch.randn(200, 2) + 3)
    near = bounds.mmd_imq(torch.randn(200, 2), torch.randn(200, 2))
    assert far > 0.1 > abs(near)


@pytest.mark.parametrize("name", ["VAE", "WAE", "HEBAE"])
def test_gradients_reach_encoder_and_decoder(models, name):
    torch.manual_seed(0)
    model = models[name](_config(name.lower()), (1, 8, 8))
    model.loss(torch.rand(16, 1, 8, 8))["objective"].backward()
    for part in (model.encoder, model.decoder):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None and torch.isfinite(g).all() for g in grads)
        assert all(g.abs().sum() > 0 for g in grads)


def test_cholesky_and_diagonal_agree_when_sigma_is_diagonal():
    torch.manual_seed(0)
    mu, log_scale, eps = torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)
    sigma = torch.diag(torch.tensor([0.5, 2.0, 1.5]))
    chol = bounds.reparameterise_cholesky(mu, log_scale, sigma, eps, jitter=0.0)
    diag = bounds.reparameterise_diagonal_shortcut(mu, log_scale, sigma, eps)
    torch.testing.assert_close(chol, diag)
    # ... and differ when it is not.
    sigma[0, 1] = sigma[1, 0] = 0.6
    chol = bounds.reparameterise_cholesky(mu, log_scale, sigma, eps, jitter=0.0)
    assert not torch.allclose(chol, bounds.reparameterise_diagonal_shortcut(mu, log_scale, sigma, eps))


def test_hebae_posteriors_agree_when_running_sigma_is_diagonal(models):
    x = torch.rand(6, *SHAPE)
    out = {}
    for reparam in ("cholesky", "diagonal"):
        torch.manual_seed(0)
        model = models["HEBAE"](_config("hebae", reparam=reparam), SHAPE).eval()
        model.running_sigma.copy_(torch.diag(torch.tensor([0.5, 2.0])))
        q = model.posterior(x)
        out[reparam] = (q.mean, q.variance)
    torch.testing.assert_close(out["cholesky"][0], out["diagonal"][0])
    torch.testing.assert_close(out["cholesky"][1], out["diagonal"][1], atol=1e-5, rtol=1e-5)


def test_hebae_kl_follows_its_scale_however_small(models):
    """The reported KL under N(0, I) must be the model's, not a jitter's: lowering every log
    scale by 3 adds k·3 nats (−log|diag(s) Σ diag(s)|/2), down to scales far below any jitter."""
    model = models["HEBAE"](_config("hebae"), SHAPE).eval()
    model.running_sigma.copy_(torch.tensor([[1.0, 0.3], [0.3, 0.8]]))
    kls = []
    for log_s in (-4.0, -7.0, -10.0, -13.0):  # s² from 3e-4 down to 5e-12, far below a 1e-6 jitter
        model.encoder = Fixed(torch.tensor([[0.5, -0.2, log_s, log_s]]))
        kls.append(metrics.kl_to_standard_normal(model.posterior(torch.zeros(1, *SHAPE))).item())
    steps = torch.diff(torch.tensor(kls))
    torch.testing.assert_close(steps, torch.full((3,), 2 * 3.0), rtol=1e-4, atol=1e-3)  # k = 2, Δlog s = 3


BAD = [
    (dict(dataset="cifar"), "dataset must be one of mnist, fashion, celeba, synthetic"),
    (dict(lam=-1.0), "lam must be >= 0.0"),
    (dict(lam=float("nan")), "lam must be finite"),
    (dict(lam=float("inf")), "lam must be finite"),
    (dict(lam="0.3x"), "lam must be a number"),
    (dict(latent_dim=0), "latent_dim must be >= 1"),
    (dict(latent_dim=2.5), "latent_dim must be an integer"),
    (dict(epochs="ten"), "epochs must be an integer"),
    (dict(epochs=float("inf")), "epochs must be finite"),
    (dict(lr=0.0), "lr must be > 0"),
    (dict(device="tpu"), "device must be one of auto, cpu, cuda"),
    (dict(reset_adam="yes"), "reset_adam must be True or False"),
    (dict(model="hebae", batch_size=1), "batch_size must be >= 2 for hebae"),
    (dict(model="wae", batch_size=1), "batch_size must be >= 2 for wae"),
    (dict(model="hebae", latent_dim=20, batch_size=16), "latent_dim must be < batch_size for hebae"),
    (dict(model="hebae", reparam="qr"), "reparam must be one of cholesky, diagonal"),
    (dict(model="vae", reparam="cholesky"), r"reparam is not a parameter of vae \(its own parameters: likelihood\)"),
    (dict(seed=True), "seed must be an integer"),
    (dict(profile="huge"), "profile must be one of paper, reduced, smoke"),
]


def test_celeba_config_follows_the_official_code_and_shrinks_with_the_profile():
    paper, _ = experiment.configure(classes()["hebae"], dataset="celeba", profile="paper")
    assert (paper["latent_dim"], paper["batch_size"], paper["lr"], paper["schedule"]) == (64, 100, 1e-4, "celeba")
    assert paper["conv_channels"] == [128, 256, 512, 1024] and paper["likelihood"] == "mse"
    # The paper's widths; 10 epochs of our faces, so that a run fits a GPU window (profiles.py).
    assert paper["profile"] == "paper" and paper["epochs"] == 10
    smoke, _ = experiment.configure(classes()["hebae"], dataset="celeba", profile="smoke")
    assert smoke["conv_channels"] == [8, 16, 32, 64] and smoke["epochs"] == 1 and smoke["profile"] == "smoke"
    for name in ("vae", "wae", "hebae"):  # λ = 0.001 for all three in the official CelebA code
        assert experiment.configure(classes()[name], dataset="celeba", profile="paper")[0]["lam"] == 1e-3


def test_an_explicit_value_wins_over_the_profile_and_every_size_is_in_the_config():
    config, _ = experiment.configure(classes()["vae"], profile="reduced", epochs=3, n_train=2000)
    assert (config["epochs"], config["n_train"]) == (3, 2000)
    for key, value in profiles.sizes("reduced", "mnist").items():
        if key not in ("epochs", "n_train"):
            assert config[key] == value, key


def test_the_environment_only_supplies_the_default_profile(monkeypatch):
    monkeypatch.setenv("HEBAE_PROFILE", "reduced")
    monkeypatch.delenv("HEBAE_SMOKE", raising=False)
    assert experiment.configure(classes()["vae"])[0]["profile"] == "reduced"
    assert experiment.configure(classes()["vae"], profile="paper")[0]["profile"] == "paper"


@pytest.mark.parametrize("kwargs,message", BAD, ids=[m for _, m in BAD])
def test_bad_parameters_name_parameter_and_allowed_values(kwargs, message):
    kwargs = dict(kwargs)
    model = classes()[kwargs.pop("model", "vae")]
    with pytest.raises(ValueError, match=message):
        experiment.configure(model, **kwargs)


def test_model_must_be_a_page_class():
    with pytest.raises(ValueError, match="model must be a subclass of hebae.autoencoder.Autoencoder"):
        experiment.configure("vae")


@pytest.mark.parametrize("name", [m.name for m in TABLE])
def test_one_training_step_on_the_conv_nets_under_bf16_autocast(name):
    """Every model trains on the CelebA nets under bf16 autocast (as on a GPU, or a CPU with AMX):
    batch moments, log-determinants, Cholesky factors and the MMD stay in float32."""
    cls = classes()[name]
    config, _ = experiment.configure(cls, dataset="celeba", profile="smoke", batch_size=8, latent_dim=4)
    torch.manual_seed(0)
    model = cls(config, (3, 64, 64)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.param_groups(), lr=1e-4)
    x = torch.rand(8, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = model.loss(x)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in terms.values())
    optimizer.zero_grad()
    terms["objective"].backward()
    optimizer.step()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_papermill_trains_and_stores_a_run_with_a_new_lambda(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "HEBAE_RESULTS_DIR": str(results), "HEBAE_SMOKE": "1", "HEBAE_FIGURES_DIR": str(tmp_path / "figures")}
    out = subprocess.run(
        [sys.executable, "-m", "hebae.papermill", "book/hebae.md", str(tmp_path / "out.ipynb"), "-p", "lam", "0.3", "-p", "dataset", "synthetic"],
        cwd=experiment.runs.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    (stored,) = [p for p in results.iterdir() if not p.name.startswith(".")]
    config = json.loads((stored / "config.json").read_text())
    assert (config["model"], config["lam"], config["profile"], config["dataset"]) == ("hebae", 0.3, "smoke", "synthetic")
    assert json.loads((stored / "provenance.json").read_text())["profile"] == "smoke"
    assert (tmp_path / "out.ipynb").exists()


def test_bad_parameter_through_papermill_leaves_no_result(tmp_path):
    results = tmp_path / "results"
    env = {**os.environ, "HEBAE_RESULTS_DIR": str(results), "HEBAE_SMOKE": "1"}
    out = subprocess.run(
        [sys.executable, "-m", "hebae.papermill", "book/hebae.md", str(tmp_path / "out.ipynb"), "-p", "lam", "-1"],
        cwd=experiment.runs.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode != 0
    assert "lam must be >= 0.0; got -1.0" in out.stdout + out.stderr
    assert not results.exists() or not any(results.iterdir())


def test_stored_checkpoint_reloads_the_same_model(models, tmp_path, monkeypatch):
    monkeypatch.setenv("HEBAE_RESULTS_DIR", str(tmp_path))
    config, _ = experiment.configure(models["VAE"], dataset="synthetic", latent_dim=2, epochs=1, batch_size=64, n_train=256, n_test=64, profile="smoke")
    run = experiment.run(config, models["VAE"], device="cpu", progress=False)
    model = experiment.load_model(run, models["VAE"], (1, 8, 8))
    test_images = experiment.load_data(config)[1].images
    # The reloaded encoder gives back the test-set means the run stored when it finished training.
    with torch.no_grad():
        torch.testing.assert_close(model.encode_mean(test_images).numpy(), run.arrays["test_mu"])
    run.checkpoint.unlink()
    with pytest.raises(FileNotFoundError, match="has no checkpoint"):
        experiment.load_model(run, models["VAE"], (1, 8, 8))


def test_a_page_left_at_profile_none_shows_the_largest_profile_its_run_is_stored_at(tmp_path, monkeypatch):
    monkeypatch.setenv("HEBAE_RESULTS_DIR", str(tmp_path))
    monkeypatch.delenv("HEBAE_SMOKE", raising=False)
    monkeypatch.setenv("HEBAE_PROFILE", "paper")
    vae = classes()["vae"]
    assert experiment.configure(vae, latent_dim=5)[0]["profile"] == "paper"  # nothing stored: the asked profile
    reduced, _ = experiment.configure(vae, latent_dim=5, profile="reduced")
    (tmp_path / runs.run_id(reduced)).mkdir()
    (tmp_path / runs.run_id(reduced) / "config.json").write_text("{}")
    assert experiment.configure(vae, latent_dim=5)[0] == reduced  # stored at reduced only: shown from there
    assert experiment.configure(vae, latent_dim=5, lam=0.3)[0]["profile"] == "paper"  # another run: trains at paper
    assert experiment.configure(vae, latent_dim=5, profile="paper")[0]["profile"] == "paper"  # named: as asked
