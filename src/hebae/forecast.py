"""How long a set of runs will take on this device, from a short measured warm-up.

A GPU window ends hard, so ``make paper`` says before it starts what it expects to need. For
every group of runs that trains together (:func:`hebae.batched.group`) the warm-up trains a
copy of the group, as it will train (batched where :func:`hebae.batched.pays`, else one run
at a time), for one untimed and one timed epoch of a few steps on real images; the step time
times the steps the group's runs need gives its training time. The FID Inception is timed on
a few batches, and each run is charged ``n_fid`` images for each set its config scores
(:func:`hebae.measure.fid_sets`). The rest of a
run's measurement (importance-weighted likelihood, MI, MIC) is not in the forecast.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from . import batched, experiment, measure, train


@dataclass
class GroupForecast:
    label: str
    runs: int
    steps_per_run: int
    batched: bool
    seconds_per_step: float  # one step of the whole group when batched, of one run when not
    fid_images: int

    @property
    def training_seconds(self) -> float:
        steps = self.steps_per_run if self.batched else self.steps_per_run * self.runs
        return steps * self.seconds_per_step


def _warm_seconds_per_step(configs: list[dict], build, dev: torch.device, batch: bool, steps: int) -> float:
    """Seconds of one optimiser step of the group (batched) or of one run (alone), timed on the
    second of two short epochs so that the first pays for allocation and kernel selection."""
    size = configs[0]["batch_size"]
    images = experiment.load_data(configs[0])[0].images[: size * steps]
    members = configs if batch else configs[:1]
    short = [dataclasses.replace(experiment.train_config(c), epochs=2) for c in members]
    models = [experiment.build_model(c, build, images.shape[1:]) for c in members]
    if batch:
        states = [train.rng_state(dev) for _ in members]
        history = batched.fit_batched(models, images, short, states, device=dev, progress=False)[0]
    else:
        history = train.fit(models[0], images, short[0], device=dev, progress=False)
    return history[-1]["seconds"] / (images.shape[0] // size)  # a small data set may have fewer steps


def group(configs: list[dict], build, dev: torch.device, *, batch: bool | None = None, steps: int = 10) -> GroupForecast:
    """The forecast of one group (:func:`hebae.batched.group`) of ``build``'s runs on ``dev``."""
    c = configs[0]
    batch = (batched.pays(c, dev, build) if batch is None else batch) and len(configs) > 1
    n_train = experiment.load_data(c)[0].images.shape[0]
    return GroupForecast(
        label=f"{c['model']} {c['dataset']} k={c['latent_dim']}",
        runs=len(configs),
        steps_per_run=c["epochs"] * (n_train // c["batch_size"]),
        batched=batch,
        seconds_per_step=_warm_seconds_per_step(configs, build, dev, batch, steps),
        fid_images=len(measure.fid_sets(c)) * c["n_fid"] * len(configs) if c.get("n_fid") else 0,
    )


def inception_images_per_second(dev: torch.device, n: int = 200, extractor=None) -> float:
    """Images per second through the FID Inception on ``dev`` now (random images: the cost does
    not depend on content); ``extractor`` reuses a network already built."""
    from . import fid

    extractor = extractor or fid.inception(dev)
    images = torch.rand(n, 3, 64, 64)
    extractor.features(images[:50])
    start = time.perf_counter()
    extractor.features(images)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return n / (time.perf_counter() - start)


def report(forecasts: list[GroupForecast], fid_rate: float, jobs: int = 1) -> tuple[str, float]:
    """A table of the forecasts and the predicted wall time in seconds (one group at a time)."""
    lines = [f"{'group':28s} {'runs':>4s} {'mode':>8s} {'steps/run':>9s} {'ms/step':>8s} {'train s':>8s} {'FID s':>6s}"]
    total = 0.0
    for f in forecasts:
        fid_seconds = f.fid_images / fid_rate if f.fid_images else 0.0
        total += f.training_seconds + fid_seconds
        lines.append(f"{f.label:28s} {f.runs:4d} {'batched' if f.batched else 'alone':>8s} {f.steps_per_run:9d} "
                     f"{1000 * f.seconds_per_step:8.2f} {f.training_seconds:8.0f} {fid_seconds:6.0f}")
    fid_note = f"FID at {fid_rate:.0f} images/s, n_fid images per scored set" if any(f.fid_images for f in forecasts) else "no FID"
    lines.append(f"predicted: {total / 60:.1f} min one group at a time ({fid_note}; other measurements not counted)"
                 + (f"; with {jobs} groups in flight at best {total / 60 / jobs:.1f} min" if jobs > 1 else ""))
    return "\n".join(lines), total
