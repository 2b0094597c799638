import pytest

from hebae import experiment, grids, profiles, runs
from pages import classes


def test_profiles_give_their_own_ids():
    ids = {runs.run_id(experiment.configure(classes()["hebae"], profile=p)[0]) for p in profiles.NAMES}
    assert len(ids) == 3


def test_default_profile_from_the_environment(monkeypatch):
    monkeypatch.delenv("HEBAE_SMOKE", raising=False)
    monkeypatch.delenv("HEBAE_PROFILE", raising=False)
    assert profiles.default() == "paper"
    monkeypatch.setenv("HEBAE_PROFILE", "reduced")
    assert profiles.default() == "reduced" and profiles.resolve(None) == "reduced"
    assert profiles.resolve("paper") == "paper"  # an explicit profile wins
    monkeypatch.setenv("HEBAE_SMOKE", "1")  # smoke wins over $HEBAE_PROFILE
    assert profiles.default() == "smoke"
    monkeypatch.setenv("HEBAE_SMOKE", "yes")
    with pytest.raises(ValueError, match="HEBAE_SMOKE must be '0' or '1'"):
        profiles.default()
    monkeypatch.setenv("HEBAE_SMOKE", "0")
    monkeypatch.setenv("HEBAE_PROFILE", "huge")
    with pytest.raises(ValueError, match="HEBAE_PROFILE must be one of paper, reduced, smoke"):
        profiles.default()


def test_sizes_shrink_from_paper_to_smoke():
    for dataset in ("mnist", "celeba", "synthetic"):
        paper, reduced, smoke = (profiles.sizes(p, dataset) for p in profiles.NAMES)
        assert paper.keys() - {"lr"} == reduced.keys() - {"lr"} == smoke.keys() - {"lr"}
        assert paper["epochs"] >= reduced["epochs"] >= smoke["epochs"] == 1
        assert paper["n_iw"] >= reduced["n_iw"] >= smoke["n_iw"]
    # On a CPU, CelebA scores fewer image sets (each costs n_fid Inception passes) than on a GPU.
    assert set(profiles.sizes("reduced", "celeba")["fid_sets"]) < set(profiles.sizes("paper", "celeba")["fid_sets"])
    assert profiles.sizes("paper", "celeba")["conv_channels"] == [128, 256, 512, 1024]
    with pytest.raises(ValueError, match="dataset must be one of mnist, fashion, synthetic, celeba"):
        profiles.sizes("paper", "cifar")


def test_describe_reads_the_config():
    config = experiment.configure(classes()["vae"], profile="reduced")[0]
    assert profiles.describe(config) == "reduced profile: 10 epoch(s) on 10,000 training images"


# ------------------------------------------------------------------------------------ grids


def test_mnist_grid_covers_every_figure_once():
    points = grids.mnist("mnist-cpu", "reduced")
    assert len(points) == len({tuple(sorted(p.items())) for p in points})
    vae_hebae = [p for p in points if p["model"] != "wae"]
    assert {p["latent_dim"] for p in vae_hebae} == set(grids.LATENT_DIMS)
    assert {p["lam"] for p in vae_hebae} == {None, 0.01, 0.1, 10.0, 100.0}  # λ = 1 is the default, None
    assert {p["latent_dim"] for p in points if p["model"] == "wae"} == {10, 20}
    assert {p["seed"] for p in points} == set(grids.SEEDS)
    assert len(points) == 54


def test_grids_follow_the_profile_they_are_given(monkeypatch):
    monkeypatch.setenv("HEBAE_SMOKE", "1")  # the environment must not leak into an explicit profile
    assert len(grids.mnist("mnist-paper", "paper")) > len(grids.mnist("mnist-paper", "smoke"))
    assert len(grids.celeba("reduced")) == 15 and len(grids.celeba("smoke")) == 6
    assert grids.default_grid("paper") == "mnist-paper" and grids.default_grid("reduced") == "mnist-cpu"
    with pytest.raises(ValueError, match="grid must be one of mnist-paper, mnist-cpu"):
        grids.mnist("mnist-huge", "paper")


def test_ablation_points_configure_with_their_options():
    for point in grids.mnist_ablations("reduced"):
        config, _ = grids.configure(point, classes(), dataset="mnist", profile="reduced")
        assert config.get("reparam") == "diagonal" or config["reset_adam"] is True


def test_grid_runner_trains_then_loads(tmp_path, monkeypatch):
    monkeypatch.setenv("HEBAE_RESULTS_DIR", str(tmp_path))
    points = [{"model": "vae", "latent_dim": 2, "lam": None, "seed": 0, "n_train": 256}]
    first = grids.run(points, classes(), dataset="synthetic", profile="smoke", device="cpu", progress=False)
    again = grids.run(points, classes(), dataset="synthetic", profile="smoke", device="cpu", progress=False)
    assert [r.id for r in first] == [r.id for r in again]
    assert first[0].config["profile"] == first[0].provenance["profile"] == "smoke"


def test_a_profile_learning_rate_is_a_default_an_explicit_one_wins():
    assert experiment.configure(classes()["vae"], dataset="celeba", profile="reduced")[0]["lr"] == 5e-4
    assert experiment.configure(classes()["vae"], dataset="celeba", profile="reduced", lr=1e-4)[0]["lr"] == 1e-4
    assert experiment.configure(classes()["vae"], dataset="celeba", profile="paper")[0]["lr"] == 1e-4


def test_a_page_shows_the_largest_complete_profile_unless_one_is_named(monkeypatch):
    monkeypatch.delenv("HEBAE_SMOKE", raising=False)
    monkeypatch.setenv("HEBAE_PROFILE", "paper")
    stored = {"reduced"}
    assert profiles.shown(None, stored.__contains__) == "reduced"  # paper runs not made yet
    stored.add("paper")
    assert profiles.shown(None, stored.__contains__) == "paper"
    assert profiles.shown(None, set().__contains__) == "paper"  # nothing stored: the asked profile trains
    assert profiles.shown("paper", {"reduced"}.__contains__) == "paper"  # a named profile is taken as asked
    monkeypatch.setenv("HEBAE_PROFILE", "reduced")
    assert profiles.shown(None, {"paper", "smoke"}.__contains__) == "reduced"  # never a larger one, never smoke
    monkeypatch.setenv("HEBAE_SMOKE", "1")
    assert profiles.shown(None, {"reduced", "smoke"}.__contains__) == "smoke"
    with pytest.raises(ValueError, match="profile must be one of paper, reduced, smoke"):
        profiles.shown("full", stored.__contains__)


def test_a_grid_is_complete_only_when_every_run_is_stored(tmp_path, monkeypatch):
    monkeypatch.setenv("HEBAE_RESULTS_DIR", str(tmp_path))
    points = grids.mnist_ablations("smoke")[:1]
    assert not grids.complete(points, classes(), dataset="mnist", profile="smoke")
    grids.run(points, classes(), dataset="mnist", profile="smoke", device="cpu", progress=False)
    assert grids.complete(points, classes(), dataset="mnist", profile="smoke")
