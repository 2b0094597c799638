"""Figures shared by the chapters: training curves, image grids, saving PNG + PDF."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from .paths import figures_dir
from .profiles import describe


def image_grid(images: np.ndarray, ncol: int = 8) -> np.ndarray:
    """Tile (n, C, H, W) images (uint8 or float) into one (rows*H, ncol*W[, C]) picture."""
    n, c, h, w = images.shape
    rows = -(-n // ncol)
    grid = np.ones((rows * h, ncol * w, c), dtype=images.dtype) * (255 if images.dtype == np.uint8 else 1)
    for i, img in enumerate(images):
        r, k = divmod(i, ncol)
        grid[r * h : (r + 1) * h, k * w : (k + 1) * w] = img.transpose(1, 2, 0)
    return grid[..., 0] if c == 1 else grid


def show_images(ax, images: np.ndarray, ncol: int = 8, title: str | None = None) -> None:
    ax.imshow(image_grid(images, ncol), cmap="gray", vmin=0, vmax=255 if images.dtype == np.uint8 else 1)
    ax.set_axis_off()
    if title:
        ax.set_title(title)


def plot_history(run, keys=("objective", "rec", "reg"), ax=None):
    """The training objective and its terms per epoch, with the test ELBO where there is one."""
    history = run.history
    epochs = [h["epoch"] for h in history]
    fig = None
    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
    for key in keys:
        if key in history[0]:
            ax[0].plot(epochs, [h[key] for h in history], marker="o", ms=3, label=key)
    ax[0].set(xlabel="epoch", ylabel="nats per image (train)", title="training objective and its terms")
    ax[0].legend()
    if "test_elbo" in history[0]:
        ax[1].plot(epochs, [h["test_elbo"] for h in history], marker="o", ms=3, color="C3")
        ax[1].set(xlabel="epoch", ylabel="nats per image", title="test ELBO under N(0, I)")
    else:
        ax[1].set_axis_off()
        ax[1].text(0.5, 0.5, "no ELBO: the encoder is deterministic", ha="center", va="center")
    return fig


def plot_samples(run):
    """Decoded prior samples, samples of the ex-post mixture where the run has them, and test
    reconstructions (originals above, reconstructions below)."""
    arrays = run.arrays
    panels = [("samples", "samples from the prior")]
    if "gmm_samples" in arrays:
        panels.append(("gmm_samples", "samples from the ex-post GMM"))
    panels.append(("reconstructions", "test images (top) and reconstructions (bottom)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.5))
    for ax, (key, title) in zip(axes, panels):
        show_images(ax, arrays[key], 8, title)
    return fig


def save(fig, name: str) -> list[Path]:
    """Save ``fig`` as figures/<name>.png and .pdf, each written atomically."""
    out = figures_dir()
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for ext in ("png", "pdf"):
        path = out / f"{name}.{ext}"
        tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}.{ext}")
        # No creation date in the PDF, so an unchanged figure is an unchanged file.
        metadata = {"CreationDate": None} if ext == "pdf" else None
        fig.savefig(tmp, dpi=150, bbox_inches="tight", metadata=metadata)
        os.replace(tmp, path)
        paths.append(path)
    return paths


def summary(run) -> str:
    """The run's headline numbers in a few lines of text."""
    m, p, c = run.metrics, run.provenance, run.config
    objective = f"training objective on the test set (the model's own, not comparable across models) {m['test_objective']:.2f}"
    if "test_reg" in m:
        objective += f" = reconstruction {m['test_rec']:.2f} + λ = {c['lam']:g} × regulariser {m['test_reg']:.3f}"
    lines = [
        f"run {run.id} ({describe(c)}; trained on {p['device']} in {p['wall_seconds']:.0f} s, "
        f"commit {str(p['git_commit'])[:10]})",
        objective,
    ]
    if "test_elbo" in m:
        lines.append(
            f"test ELBO under N(0, I): {m['test_elbo']:.2f} nats = −reconstruction {m['test_elbo_rec']:.2f} "
            f"− KL {m['test_elbo_kl']:.2f}"
        )
        lines.append(
            f"importance-weighted log p(x) under the model's own prior, K = {m['iw_samples']}, {m['iw_images']} test images: "
            f"{m['iw_log_likelihood']:.2f} nats"
        )
    if "refit_elbo" in m:
        lines.append(
            f"refit yardstick (means and decoder frozen, one posterior sd per dimension fitted on {m['refit_images']} "
            f"held-out images): ELBO {m['refit_elbo']:.2f}, importance-weighted log p(x) {m['refit_iw_log_likelihood']:.2f} nats"
        )
    lines.append(
        f"latent means: {m['active_dims']} of {c['latent_dim']} dimensions active, "
        f"mean |off-diagonal correlation| {m['mean_abs_offdiag_corr']:.3f}"
    )
    return "\n".join(lines)


def report(run) -> None:
    """What a model page shows after training: the headline numbers, curves and images."""
    print(summary(run))
    plot_history(run)
    plt.show()
    plot_samples(run)
    plt.show()
