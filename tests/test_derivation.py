"""The derivation chapter executes cleanly, and it stops executing when a bound it checks is broken.

The chapter (book/derivation.md) asserts every identity it derives against functions from
``hebae.bounds``. These tests run it as a notebook: once as written, once with pass-through
wrappers around those functions (to see which ones it exercises), and once per deliberately
broken function, which must make one of its assertions fail.
"""

from __future__ import annotations

import json
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

CHAPTER = Path(__file__).resolve().parents[1] / "book" / "derivation.md"

# The functions the model chapters train with; the chapter must check every one of them.
CHECKED_FUNCTIONS = (
    "bernoulli_nll", "kl_diag_normal", "kl_normal", "batch_moments", "hebae_regulariser",
    "reparameterise_diag", "cholesky_factor", "reparameterise_cholesky",
    "reparameterise_diagonal_shortcut", "imq_kernel_sum", "mmd_imq", "standard_normal_logpdf",
)


def execute_chapter(workdir: Path, prelude: str | None = None, epilogue: str | None = None) -> nbformat.NotebookNode:
    """Convert the MyST chapter to a notebook, add optional first/last code cells, and execute it.

    Raises nbclient's CellExecutionError if any cell raises.
    """
    notebook = jupytext.read(CHAPTER)
    if prelude is not None:
        notebook.cells.insert(0, nbformat.v4.new_code_cell(prelude))
    if epilogue is not None:
        notebook.cells.append(nbformat.v4.new_code_cell(epilogue))
    client = NotebookClient(notebook, kernel_name="python3", timeout=600,
                            resources={"metadata": {"path": str(workdir)}})
    client.execute()
    return notebook


def test_chapter_runs_clean_and_writes_nothing(tmp_path):
    notebook = execute_chapter(tmp_path)
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.output_type == "error"]
    assert any("image/png" in out.get("data", {}) for out in outputs), "the covariance heatmap is missing"
    assert not list(tmp_path.iterdir()), "the chapter must not write files"


WRAP_ALL = f"""
import functools
import hebae.bounds as _bounds_under_test
_calls = {{}}

def _counting(name, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _calls[name] = _calls.get(name, 0) + 1
        return fn(*args, **kwargs)
    return wrapper

for _name in {list(CHECKED_FUNCTIONS)!r}:
    setattr(_bounds_under_test, _name, _counting(_name, getattr(_bounds_under_test, _name)))
"""


def test_chapter_uses_every_bound_through_the_module(tmp_path):
    """Pass-through wrappers installed before the chapter runs are seen: so would a broken function be."""
    notebook = execute_chapter(tmp_path, prelude=WRAP_ALL, epilogue="import json\nprint(json.dumps(_calls))")
    calls = json.loads(notebook.cells[-1].outputs[0]["text"])
    missing = [name for name in CHECKED_FUNCTIONS if not calls.get(name)]
    assert not missing, f"the chapter never calls bounds.{', bounds.'.join(missing)}"


BREAKAGES = {
    "kl_normal without its 1/2": """
_unbroken = bounds.kl_normal
bounds.kl_normal = lambda mean, cov: 2 * _unbroken(mean, cov)
""",
    "kl_diag_normal without its 1/2": """
_unbroken = bounds.kl_diag_normal
bounds.kl_diag_normal = lambda mu, logvar: 2 * _unbroken(mu, logvar)
""",
    "batch_moments dividing by m - 1": """
_unbroken = bounds.batch_moments
bounds.batch_moments = lambda mu, *, unbiased=False: _unbroken(mu, unbiased=True)
""",
    "hebae_regulariser with -beta^T beta (the printed Eq. 11)": """
_unbroken = bounds.hebae_regulariser
def _broken(mu, *, jitter=0.0):
    beta, _ = bounds.batch_moments(mu)
    return _unbroken(mu, jitter=jitter) - beta @ beta
bounds.hebae_regulariser = _broken
""",
    "hebae_regulariser ignoring correlations (diagonal of Sigma_hat only)": """
def _broken(mu, *, jitter=0.0):
    beta, sigma = bounds.batch_moments(mu)
    return bounds.kl_normal(beta, torch.diag_embed(sigma.diagonal() + jitter))
bounds.hebae_regulariser = _broken
""",
    "hebae_regulariser pulling each mean to the origin (mean of |mu_i|^2 for |beta|^2)": """
_unbroken = bounds.hebae_regulariser
def _broken(mu, *, jitter=0.0):
    beta, _ = bounds.batch_moments(mu)
    return _unbroken(mu, jitter=jitter) + 0.5 * (mu.pow(2).sum(-1).mean() - beta @ beta)
bounds.hebae_regulariser = _broken
""",
    "hebae_regulariser charging for shape beyond two moments (excess kurtosis)": """
_unbroken = bounds.hebae_regulariser
def _broken(mu, *, jitter=0.0):
    standardised = (mu - mu.mean(0)) / mu.std(0, correction=0)
    return _unbroken(mu, jitter=jitter) + 0.1 * (standardised.pow(4).mean(0) - 3).pow(2).sum()
bounds.hebae_regulariser = _broken
""",
    "reparameterise_cholesky replaced by the diagonal shortcut": """
bounds.reparameterise_cholesky = (
    lambda mu, log_scale, sigma, eps=None, *, jitter=1e-6:
    bounds.reparameterise_diagonal_shortcut(mu, log_scale, sigma, eps)
)
""",
    "mmd_imq as the biased V-statistic": """
def _broken(z, z_prior, scales=(0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)):
    kernel = bounds.imq_kernel_sum
    return kernel(z, z, scales).mean() + kernel(z_prior, z_prior, scales).mean() - 2 * kernel(z, z_prior, scales).mean()
bounds.mmd_imq = _broken
""",
}


@pytest.mark.parametrize("breakage", sorted(BREAKAGES))
def test_chapter_catches_a_broken_bound(tmp_path, breakage):
    prelude = "import torch\nimport hebae.bounds as bounds\n" + BREAKAGES[breakage]
    with pytest.raises(CellExecutionError) as failure:
        execute_chapter(tmp_path, prelude=prelude)
    assert failure.value.ename == "AssertionError", f"{breakage}: failed with {failure.value.ename}, not a check"


@pytest.mark.parametrize("reparam", ["cholesky", "diagonal"])
def test_hebae_page_detaches_sigma_hat_in_the_draw(reparam):
    """The chapter says the HEBAE page's draw passes gradients to the means only through z = mu + noise.

    With the batch covariance detached, d(sum_i w_i^T z_i)/d mu_i = w_i exactly; a gradient through
    the Cholesky factor (or the square roots of its diagonal) would add to it.
    """
    import torch

    from hebae import bounds, experiment
    from pages import model_class  # book/ is on the path (pyproject's pytest settings)

    cls = model_class("hebae", "HEBAE")
    config, _ = experiment.configure(cls, dataset="synthetic", latent_dim=3, batch_size=16, reparam=reparam)
    model = cls(config, (1, 2, 2))
    generator = torch.Generator().manual_seed(0)
    mu = torch.randn(16, 3, generator=generator).requires_grad_()
    log_scale, w = torch.randn(16, 3, generator=generator), torch.randn(16, 3, generator=generator)
    _, sigma = bounds.batch_moments(mu)
    z = model.sample(mu, log_scale, sigma)
    (grad,) = torch.autograd.grad((w * z).sum(), mu)
    torch.testing.assert_close(grad, w)
