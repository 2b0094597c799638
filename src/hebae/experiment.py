"""From a model page's parameters to a stored run.

``configure`` checks every parameter a reader may change, fills in the paper's settings and the
profile's sizes, and returns the config that identifies the run; ``run`` trains the model the
page defines (or loads the stored run) and measures it with :mod:`hebae.measure`, the same way
for every model, so the model pages hold only what differs: the objective.
"""

from __future__ import annotations

import functools
import math
import numbers

import torch

from . import data, measure, profiles, runs, train
from .autoencoder import Autoencoder
from .train import DEVICES

# The paper's settings (Appendix B and the official code), per dataset.
PAPER = {
    "mnist": {"latent_dim": 20, "batch_size": 128, "lr": 1e-3, "schedule": "mnist", "likelihood": "bernoulli"},
    "celeba": {"latent_dim": 64, "batch_size": 100, "lr": 1e-4, "schedule": "celeba", "likelihood": "mse"},
    # Not in the paper: a small problem of known latent dimension (4) for quick experiments.
    "synthetic": {"latent_dim": 4, "batch_size": 128, "lr": 1e-3, "schedule": "mnist", "likelihood": "bernoulli"},
}


def _number(name: str, value, *, integer: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind}; got {value!r}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite; got {value!r}")
    if integer and value != int(value):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    return int(value) if integer else float(value)


def _at_least(name: str, value, low, *, integer: bool = True):
    value = _number(name, value, integer=integer)
    if value < low:
        raise ValueError(f"{name} must be >= {low}; got {value!r}")
    return value


def _choice(name: str, value, allowed) -> str:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(str, allowed))}; got {value!r}")
    return value


def _model_class(model) -> type[Autoencoder]:
    if not (isinstance(model, type) and issubclass(model, Autoencoder) and model.name):
        raise ValueError(f"model must be a subclass of hebae.autoencoder.Autoencoder with a name; got {model!r}")
    return model


def configure(
    model: type[Autoencoder],
    *,
    profile: str | None = None,
    dataset: str = "mnist",
    latent_dim=None,
    lam=None,
    epochs=None,
    batch_size=None,
    lr=None,
    seed=0,
    device: str = "auto",
    reset_adam: bool = False,
    n_train=None,
    n_test=None,
    n_fid=None,
    fid_sets=None,
    **options,
) -> tuple[dict, str]:
    """Check the parameters of ``model`` (a page's class), fill ``None`` with the paper's setting
    and the profile's sizes; return ``(config, device)``.

    The config identifies the run; the device only says where it trains. ``profile`` None takes
    the environment's default (:func:`hebae.profiles.default`), or a smaller profile at which this
    very run is stored (:func:`hebae.profiles.shown`). ``options`` are the model's own
    parameters (its ``options`` table). ``n_fid`` and ``fid_sets`` (the generated sets a run
    scores, :data:`hebae.measure.FID_SETS`) replace the profile's where given, and enter the
    config only then. Bad input raises one ``ValueError`` naming the parameter
    and what it may be.
    """
    params = dict(dataset=dataset, latent_dim=latent_dim, lam=lam, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                  device=device, reset_adam=reset_adam, n_train=n_train, n_test=n_test, n_fid=n_fid, fid_sets=fid_sets,
                  **options)
    if profile is None:
        # Left at None, the largest profile at which this run is stored (a book built with
        # PROFILE=paper before the GPU made it shows the reduced run), else the environment's.
        profile = profiles.shown(None, lambda p: runs.find(_configure(model, p, **params)[0]) is not None)
    return _configure(model, profile, **params)


def _configure(model, profile, *, dataset, latent_dim, lam, epochs, batch_size, lr, seed, device, reset_adam, n_train,
               n_test, n_fid, fid_sets=None, **options) -> tuple[dict, str]:
    model = _model_class(model)
    profile = profiles.resolve(profile)
    dataset = _choice("dataset", dataset, data.DATASETS)
    device = _choice("device", device, DEVICES)
    if not isinstance(reset_adam, bool):
        raise ValueError(f"reset_adam must be True or False; got {reset_adam!r}")
    unknown = sorted(set(options) - set(model.options))
    if unknown:
        allowed = ", ".join(model.options) or "none"
        raise ValueError(f"{unknown[0]} is not a parameter of {model.name} (its own parameters: {allowed})")
    paper, scale = PAPER[profiles.settings_dataset(dataset)], profiles.sizes(profile, dataset)
    own = model.profile_sizes.get(profile, {}).get(profiles.settings_dataset(dataset), {})
    if set(own) - set(scale):
        raise ValueError(f"{model.name}.profile_sizes names {sorted(set(own) - set(scale))[0]!r}, which is not a size of the "
                         f"{profile} profile (its sizes: {', '.join(scale)})")
    scale.update(own)
    if n_fid is not None:
        scale["n_fid"] = _at_least("n_fid", n_fid, 2)
    if fid_sets is not None:
        # A grid that reads only some scores skips the others' cost (an ex-post mixture in 64
        # dimensions takes minutes on a CPU); kept in measure's order, so one set is one config.
        if not isinstance(fid_sets, (list, tuple)) or not fid_sets or any(f not in measure.FID_SETS for f in fid_sets) \
                or len(set(fid_sets)) != len(fid_sets):
            raise ValueError(f"fid_sets must be a non-empty list of distinct names from {', '.join(measure.FID_SETS)}; got {fid_sets!r}")
        scale["fid_sets"] = [f for f in measure.FID_SETS if f in fid_sets]
    paper_lr = scale.pop("lr", paper["lr"])  # a profile may replace the paper's learning rate
    config = {
        "model": model.name,
        "profile": profile,
        "dataset": dataset,
        "latent_dim": _at_least("latent_dim", paper["latent_dim"] if latent_dim is None else latent_dim, 1),
        "lam": _at_least("lam", default_lam(model, dataset) if lam is None else lam, 0.0, integer=False),
        "batch_size": _at_least("batch_size", paper["batch_size"] if batch_size is None else batch_size, 1),
        "lr": _number("lr", paper_lr if lr is None else lr),
        "seed": _at_least("seed", seed, 0),
        "schedule": paper["schedule"],
        "reset_adam": reset_adam,
        "likelihood": paper["likelihood"],
        **scale,
        "epochs": _at_least("epochs", scale["epochs"] if epochs is None else epochs, 1),
        "n_train": scale["n_train"] if n_train is None else _at_least("n_train", n_train, 2),
        "n_test": scale["n_test"] if n_test is None else _at_least("n_test", n_test, 2),
    }
    for name, allowed in model.options.items():
        # An option the paper's settings already fill (the VAE's likelihood) keeps their value by
        # default, so declaring it leaves every default config, and so every stored run, as it was.
        default = config[name] if name in config else allowed[0]
        config[name] = _choice(name, options.get(name, default), allowed)
    if config["lr"] <= 0:
        raise ValueError(f"lr must be > 0; got {config['lr']!r}")
    if model.batch_statistics and config["batch_size"] < 2:
        raise ValueError(f"batch_size must be >= 2 for {model.name} (it uses batch statistics); got {config['batch_size']}")
    model.check(config)
    return config, device


def default_lam(model: type[Autoencoder], dataset: str) -> float:
    """The model's λ for ``dataset``, or for the dataset whose settings it takes where the model
    names none (Fashion-MNIST: MNIST's)."""
    table = model.default_lam
    return table[dataset] if dataset in table else table[profiles.settings_dataset(dataset)]


@functools.lru_cache(maxsize=4)
def _load(dataset: str, split: str, limit: int | None) -> data.Split:
    # A results chapter trains many runs in one process; decode the data once.
    return data.load(dataset, split, limit=limit)


def load_data(config: dict) -> tuple[data.Split, data.Split]:
    return _load(config["dataset"], "train", config["n_train"]), _load(config["dataset"], "test", config["n_test"])


def train_config(config: dict) -> train.TrainConfig:
    conv = config["dataset"] == "celeba"
    return train.TrainConfig(
        epochs=config["epochs"], batch_size=config["batch_size"], lr=config["lr"], schedule=config["schedule"],
        seed=config["seed"], reset_adam=config["reset_adam"], bf16=conv, channels_last=conv,
    )


def run(config: dict, build: type[Autoencoder], *, device: str = "auto", progress: bool = True,
        checkpoint_seconds: float = 0.0) -> runs.Run:
    """Train the model ``build(config, image_shape)`` returns, or load the stored run.

    Training checkpoints itself into the run's temporary folder after every epoch (at most once
    per ``checkpoint_seconds``); a run killed and asked for again resumes from there.
    """
    if config.get("model") != getattr(build, "name", None):
        raise ValueError(f"config is for model {config.get('model')!r} but build is {getattr(build, 'name', build)!r}")

    def train_and_measure(workdir):
        return train_one(config, build, train.pick_device(device), workdir, progress=progress, checkpoint_seconds=checkpoint_seconds)

    return runs.get_or_train(config, train_and_measure)


def evaluator(test_images: torch.Tensor):
    """The per-epoch evaluation every run records (:func:`hebae.measure.per_epoch`)."""

    def evaluate(model, epoch):
        return measure.per_epoch(model, test_images)

    return evaluate


def build_model(config: dict, build: type[Autoencoder], image_shape) -> torch.nn.Module:
    """The run's model as a lone run builds it: every generator seeded from the config first."""
    train.seed_everything(config["seed"])
    return build(config, image_shape)


def train_one(config: dict, build: type[Autoencoder], dev: torch.device, workdir, *, progress: bool = True,
              checkpoint_seconds: float = 0.0) -> runs.Artifacts:
    """Train one run alone in ``workdir`` (resuming from its resume state there) and measure it."""
    train_split, test_split = load_data(config)
    model = build_model(config, build, train_split.shape)
    history = train.fit(
        model, train_split.images, train_config(config), device=dev, evaluate=evaluator(test_split.images),
        progress=progress, checkpoint=workdir / runs.RESUME_FILE, checkpoint_seconds=checkpoint_seconds,
    )
    return finish(model, config, history, dev, workdir, progress=progress)


def finish(model: torch.nn.Module, config: dict, history: list[dict], dev: torch.device, workdir, *,
           progress: bool = True) -> runs.Artifacts:
    """What follows training, the same for a lone run and a batched one: the model's own
    ``after_training`` step, the measurements, and the weights saved into ``workdir``."""
    from safetensors.torch import save_file

    train_split, test_split = load_data(config)
    model.after_training(train_split.images, dev)
    artifacts = measure.measure(model, test_split.images, config, dev, train_images=train_split.images, progress=progress)
    artifacts.history = history
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(workdir / "checkpoint.safetensors"))
    return artifacts


def load_model(run: runs.Run, build: type[Autoencoder], image_shape) -> torch.nn.Module:
    """Rebuild a stored run's model from its checkpoint (safetensors: no code is unpickled)."""
    from safetensors.torch import load_file

    if not run.checkpoint.exists():
        raise FileNotFoundError(f"run {run.id} has no checkpoint at {run.checkpoint}; rerun it to recreate one")
    model = build(run.config, image_shape)
    model.load_state_dict(load_file(str(run.checkpoint)))
    return model.eval()

