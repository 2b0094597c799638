"""The latent-dimension chapter's parts: synthetic data of a known latent dimension n, the
Fréchet distance on data vectors, NAC, what a synthetic run scores, and the chapter's grid."""

import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from hebae import data, experiment, grids, grids_latent, measure, metrics, profiles, runs
from pages import classes

# ------------------------------------------------------------------------------- the data


@pytest.mark.parametrize("n", [4, 8, 16])
def test_the_generator_fills_a_manifold_of_exactly_n_dimensions(n):
    generate = data.synthetic_generator(n)
    z = torch.randn(5, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    for point in z:
        jac = torch.autograd.functional.jacobian(lambda v: generate(v[None].float()).flatten(), point.float())
        assert jac.shape == (64, n)
        # The Jacobian of f has full column rank n at every code: locally the images vary in
        # exactly n directions of the 64-dimensional pixel space, no fewer and no more.
        assert torch.linalg.matrix_rank(jac.double(), rtol=1e-6) == n


def test_the_named_data_sets_carry_their_dimension_and_differ():
    eight, sixteen = data.load("synthetic8", "train", limit=512), data.load("synthetic16", "train", limit=512)
    assert eight.images.shape == sixteen.images.shape == (512, 1, 8, 8)
    assert eight.labels.shape == (512, 8) and sixteen.labels.shape == (512, 16)
    # The images are the generator's image of the stored codes (the labels).
    assert torch.equal(eight.images, data.synthetic_generator(8)(eight.labels))
    assert not torch.allclose(eight.images.mean(0), sixteen.images.mean(0), atol=1e-3)
    # Train and test are disjoint draws from one generator.
    test = data.load("synthetic8", "test", limit=512)
    assert not torch.equal(test.labels, eight.labels)
    assert torch.equal(test.images, data.synthetic_generator(8)(test.labels))
    # Plain "synthetic" is what it was: n = 4.
    assert data.load("synthetic", "test", limit=3).labels.shape == (3, 4)


def test_more_latent_dimensions_spread_the_pixels_over_more_principal_components():
    def components_for(name, share=0.95):
        x = data.load(name, "train").images.flatten(1).double()
        s = torch.linalg.svdvals(x - x.mean(0)).pow(2)
        return int((s.cumsum(0) / s.sum() < share).sum()) + 1

    assert components_for("synthetic") < components_for("synthetic8") < components_for("synthetic16")


def test_bad_latent_dimension_or_name_is_refused():
    with pytest.raises(ValueError, match="latent_dim of synthetic8 must be 8"):
        data.load("synthetic8", latent_dim=16)
    with pytest.raises(ValueError, match="dataset must be one of mnist, fashion, celeba, synthetic, synthetic8, synthetic16"):
        data.load("synthetic12")
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="latent_dim must be an integer >= 1"):
            data.synthetic("train", n=4, latent_dim=bad)
    with pytest.raises(ValueError, match=r"z must have shape \(N, 8\)"):
        data.synthetic_generator(8)(torch.zeros(3, 4))
    with pytest.raises(ValueError, match="dataset must be one of"):
        experiment.configure(classes()["wae"], dataset="synthetic32", profile="smoke")


def test_the_new_data_sets_take_synthetic_settings_and_leave_its_configs_alone():
    wae = classes()["wae"]
    plain, _ = experiment.configure(wae, dataset="synthetic", latent_dim=8, profile="reduced")
    eight, _ = experiment.configure(wae, dataset="synthetic8", latent_dim=8, profile="reduced")
    assert {k: v for k, v in eight.items() if k != "dataset"} == {k: v for k, v in plain.items() if k != "dataset"}
    assert profiles.settings_dataset("synthetic16") == "synthetic"
    assert "fid_sets" not in plain  # only a config that asks for fewer sets names them
    narrowed, _ = experiment.configure(wae, dataset="synthetic8", profile="smoke", fid_sets=["rec", "prior"])
    assert narrowed["fid_sets"] == ["prior", "rec"]  # one order, so one set of sets is one config
    for bad in (["prior", "prior"], [], ["inception"], "prior"):
        with pytest.raises(ValueError, match="fid_sets must be a non-empty list of distinct names from prior, gmm, gmm_draws, rec"):
            experiment.configure(wae, dataset="synthetic8", profile="smoke", fid_sets=bad)


# ---------------------------------------------------------------- the data-space distance


def test_data_frechet_is_zero_on_a_set_itself_and_the_squared_shift_for_a_shifted_set():
    x = data.load("synthetic8", "test", limit=300).images
    same = metrics.data_frechet(x, x)
    assert abs(same["fd"]) < 1e-9
    shift = torch.full_like(x, 0.05)
    moved = metrics.data_frechet(x + shift, x)
    # Equal covariances: only the means differ, so the distance is ||c||² = 64 · 0.05².
    assert moved["fd"] == pytest.approx(64 * 0.05**2, rel=1e-6)
    other = metrics.data_frechet(data.load("synthetic16", "test", limit=300).images, x)
    assert other["fd"] > moved["fd"] > 0 and other["fd_se"] > 0
    assert metrics.data_frechet(x, x + shift)["fd"] == pytest.approx(moved["fd"], rel=1e-9)  # symmetric
    assert same["scale"] == pytest.approx(float(np.trace(np.cov(x.flatten(1).double().numpy(), rowvar=False))))
    assert metrics.data_frechet(x + shift, x, seed=3) == metrics.data_frechet(x + shift, x, seed=3)  # repeatable


def test_data_frechet_refuses_bad_input():
    with pytest.raises(ValueError, match="generated and real must have the same dimension"):
        metrics.data_frechet(torch.rand(10, 1, 8, 8), torch.rand(10, 1, 4, 4))
    with pytest.raises(ValueError, match="real must hold at least 2 vectors"):
        metrics.data_frechet(torch.rand(10, 64), torch.rand(1, 64))
    with pytest.raises(ValueError, match="generated must be finite"):
        metrics.data_frechet(torch.full((10, 64), float("nan")), torch.rand(10, 64))


# -------------------------------------------------------------------------------------- NAC


def test_nac_is_zero_for_a_diagonal_covariance_and_rho_for_an_equicorrelated_one():
    assert metrics.nac(np.diag([1.0, 4.0, 0.25])) == 0.0
    rho, k = 0.3, 5
    equi = (1 - rho) * np.eye(k) + rho * np.ones((k, k))
    assert metrics.nac(equi) == pytest.approx(rho)
    # Normalised: rescaling each dimension leaves it alone; the sign of a correlation does not count.
    scale = np.diag([0.1, 1.0, 3.0, 10.0, 0.5])
    assert metrics.nac(scale @ equi @ scale) == pytest.approx(rho)
    flip = np.diag([1.0, -1.0, 1.0, 1.0, 1.0])
    assert metrics.nac(flip @ equi @ flip) == pytest.approx(rho)


def test_nac_leaves_out_dimensions_without_variance():
    rho = 0.5
    cov = np.array([[1.0, rho, 0.0], [rho, 1.0, 0.0], [0.0, 0.0, 0.0]])  # the third dimension is masked
    assert metrics.nac(cov) == pytest.approx(rho)
    assert metrics.nac(cov, np.array([True, True, False])) == pytest.approx(rho)
    assert math.isnan(metrics.nac(cov, np.array([True, False, False])))  # one dimension: no pair
    with pytest.raises(ValueError, match="dims must select dimensions with positive variance"):
        metrics.nac(cov, np.array([True, True, True]))
    with pytest.raises(ValueError, match=r"dims must be a boolean mask of shape \(3,\)"):
        metrics.nac(cov, [0, 1])
    with pytest.raises(ValueError, match=r"cov must be a square \(k, k\) matrix"):
        metrics.nac(np.ones((2, 3)))


def test_nac_of_independent_codes_sits_at_its_sample_size_floor():
    gen = np.random.default_rng(0)
    codes = gen.standard_normal((400, 12))
    out = metrics.nac_of_codes(codes)
    assert out["nac_dims"] == 12 and out["nac_codes"] == 400
    assert out["nac"] == pytest.approx(metrics.nac_null(400), abs=3 * out["nac_se"])
    # The floor: E|r| of two independent normal samples of n, checked by simulation and against
    # its large-n form sqrt(2 / (π n)).
    r = [abs(np.corrcoef(gen.standard_normal((2, 50)))[0, 1]) for _ in range(4000)]
    assert np.mean(r) == pytest.approx(metrics.nac_null(50), rel=0.04)
    assert metrics.nac_null(10**6) == pytest.approx(math.sqrt(2 / (math.pi * 10**6)), rel=1e-5)
    # Correlated codes: far above the floor, and the masked (constant) dimension is left out.
    mixed = np.column_stack([codes[:, :3] @ np.ones((3, 3)) + 0.1 * codes[:, 3:6], np.zeros(400)])
    out = metrics.nac_of_codes(mixed)
    assert out["nac_dims"] == 3 and out["nac"] > 0.9
    with pytest.raises(ValueError, match="n must be an integer >= 3"):
        metrics.nac_null(2)


def test_nac_active_is_the_latent_summary_number():
    mu = torch.randn(300, 6, generator=torch.Generator().manual_seed(1)) @ torch.randn(6, 6, generator=torch.Generator().manual_seed(2))
    mu[:, 4] *= 1e-3  # collapsed
    summary = metrics.latent_summary(mu)
    assert summary["active_dims"] == 5
    assert metrics.nac_of_codes(mu.numpy())["nac"] == pytest.approx(summary["mean_abs_offdiag_corr_active"])


# ------------------------------------------------------------------ what a synthetic run scores


def test_a_synthetic_run_scores_data_vectors_and_never_calls_inception(tmp_path, monkeypatch):
    monkeypatch.setenv("HEBAE_RESULTS_DIR", str(tmp_path))

    def no_inception(device):
        raise AssertionError("the Inception network must not run on synthetic data")

    monkeypatch.setattr(measure, "_inception", no_inception)
    wae = classes()["wae"]
    config, _ = experiment.configure(wae, dataset="synthetic8", latent_dim=4, profile="smoke", epochs=2, n_train=256,
                                     n_test=64, batch_size=32, n_fid=20, fid_sets=["prior", "rec"])
    run = experiment.run(config, wae, device="cpu", progress=False)
    m = run.metrics
    assert m["data_fd_generated"] == m["data_fd_real"] == 20
    for key in ("data_fd", "rec_data_fd", "data_fd_floor"):
        assert m[key] > 0 and m[f"{key}_se"] > 0
    assert "gmm_data_fd" not in m and "fid" not in m and "kid" not in m  # only the sets asked for; no Inception
    assert m["data_fd_floor"] < m["data_fd"]  # two epochs on 256 vectors leave the model far from the data
    assert m["nac_codes"] == 64 and 0 <= m["nac"] <= 1 and m["nac_se"] > 0
    # The run stores what a page needs to recompute NAC by the same procedure.
    assert metrics.nac_of_codes(run.arrays["test_mu"], seed=config["seed"])["nac"] == pytest.approx(m["nac"])


# ---------------------------------------------------------------------------------- the grid


@pytest.mark.parametrize("profile", profiles.NAMES)
def test_the_grid_brackets_n_for_every_model_and_seed(profile):
    for dataset in grids_latent.LATENT_DATASETS:
        points = grids_latent.latent(dataset, profile)
        assert {p["model"] for p in points} == set(grids_latent.LATENT_MODELS) == {"wae", "hebae", "maskaae"}
        seeds = grids_latent.LATENT_SEEDS[profile][dataset]
        assert [p["seed"] for p in points] == sorted(p["seed"] for p in points)  # seed by seed
        for model in grids_latent.LATENT_MODELS:
            for seed in seeds:
                dims = sorted(p["latent_dim"] for p in points if p["model"] == model and p["seed"] == seed)
                assert len(dims) == len(set(dims)) >= 3
                n = grids_latent.TRUE_DIM.get(dataset, grids_latent.LANDSCAPE_K)
                assert dims[0] < n < dims[-1] and n in dims  # below, at and above n
        assert all(p["lam"] is None for p in points)  # each model at its page's default λ
    assert grids_latent.TRUE_DIM == {"synthetic8": 8, "synthetic16": 16}


def test_the_grid_points_are_as_documented():
    reduced = {d: grids_latent.latent(d, "reduced") for d in grids_latent.LATENT_DATASETS}
    assert len(reduced["synthetic8"]) == len(reduced["synthetic16"]) == 3 * 6 * 2
    assert len(reduced["mnist"]) == 3 * 5
    assert sorted({p["latent_dim"] for p in reduced["synthetic8"]}) == [2, 4, 8, 16, 32, 64]
    assert all(p["fid_sets"] == ["prior", "rec"] and "n_fid" not in p for p in reduced["synthetic16"])
    # MNIST: FID on the landscape's sample size; its WAE and HEBAE at m = 16 are the landscape's runs.
    mnist = reduced["mnist"]
    assert all(p["n_fid"] == grids.LANDSCAPE_N_FID["reduced"] for p in mnist)
    shared = [p for p in mnist if "fid_sets" not in p]
    assert {(p["model"], p["latent_dim"]) for p in shared} == {("wae", 16), ("hebae", 16)}
    assert all(p in grids.landscape("reduced") for p in shared)
    # Models whose page is missing are left out; names that are no model of the grid are ignored.
    only = grids_latent.latent("synthetic8", "smoke", models={"wae": object, "vae": object})
    assert {p["model"] for p in only} == {"wae"}
    with pytest.raises(ValueError, match="dataset must be one of synthetic8, synthetic16, mnist"):
        grids_latent.latent("synthetic", "smoke")
    with pytest.raises(ValueError, match="profile must be one of paper, reduced, smoke"):
        grids_latent.latent("mnist", "tiny")


def test_every_grid_point_configures():
    models = classes()
    for dataset in grids_latent.LATENT_DATASETS:
        configs = [grids.configure(p, models, dataset=dataset, profile="reduced")[0] for p in grids_latent.latent(dataset, "reduced")]
        assert len({runs.run_id(c) for c in configs}) == len(configs)
        assert all(c["dataset"] == dataset for c in configs)


def test_the_reproduce_tool_knows_the_grids(tmp_path):
    env = {**os.environ, "HEBAE_RESULTS_DIR": str(tmp_path)}  # the tool tidies its results folder first
    out = subprocess.run(
        [sys.executable, "tools/reproduce.py", "--grid", *(f"latent-{d}" for d in grids_latent.LATENT_DATASETS), "--profile", "smoke",
         "--dry-run"], cwd=runs.PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    for dataset in grids_latent.LATENT_DATASETS:
        assert f"grid latent-{dataset} at the smoke profile: {len(grids_latent.latent(dataset, 'smoke'))} runs" in out.stdout
