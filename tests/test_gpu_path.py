"""The GPU path, checked where it can be on a CPU: no host-synchronising Cholesky, the mixed grid
(a batched MNIST group, then CelebA HEBAE in one process) that once failed on a GPU, and the
diagnosis tools that name the first module to make a NaN."""

import math

import pytest
import torch
from torch import nn

from hebae import bounds, diagnose
from pages import classes

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_a_failed_cholesky_is_nan_not_an_exception():
    good = torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    torch.testing.assert_close(bounds.cholesky_factor(good, 0.0), torch.linalg.cholesky(good))
    bad = torch.tensor([[float("nan"), 0.0], [0.0, 1.0]])
    assert torch.isnan(bounds.cholesky_factor(bad)).all()
    indefinite = torch.tensor([[1.0, 2.0], [2.0, 1.0]])
    assert torch.isnan(bounds.cholesky_factor(indefinite, 0.0)).all()
    # batched, as under vmap: only the failed member is NaN
    both = bounds.cholesky_factor(torch.stack([good, indefinite]), 0.0)
    assert torch.isfinite(both[0]).all() and torch.isnan(both[1]).all()


def test_the_watch_names_the_first_module_that_makes_a_nan():
    class Sqrt(nn.Module):
        def forward(self, x):
            return x.sqrt()

    net = nn.Sequential(nn.Linear(3, 3), nn.Identity(), Sqrt(), nn.Linear(3, 1))
    with torch.no_grad():
        net[0].weight.copy_(-torch.eye(3))
        net[0].bias.zero_()
    with diagnose.watch_non_finite(net) as watch:
        net(torch.ones(2, 3))
    assert watch.first == ("2", "Sqrt", True)
    assert "inputs were finite" in watch.report()
    with diagnose.watch_non_finite(net) as watch:
        net(torch.zeros(2, 3))
    assert watch.first is None and "finite" in watch.report()
    assert not net[0]._forward_hooks  # the hooks are gone after the block


def test_poisoning_is_a_no_op_on_a_cpu_and_checks_its_fraction():
    assert diagnose.poison_device_cache("cpu") == 0
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"fraction must be in \(0, 0.9\]"):
            diagnose.poison_device_cache("cuda", fraction=1.0)


@pytest.mark.parametrize("device", DEVICES)
def test_a_batched_mnist_group_then_celeba_hebae_in_one_process(device):
    seen = diagnose.mixed_grid(classes(), device, mnist_runs=3, mnist_steps=2)
    assert len(seen["mnist_objectives"]) == 3 and all(math.isfinite(v) for v in seen["mnist_objectives"])
    assert seen["celeba_error"] is None, seen["report"]
    assert seen["first_non_finite"] is None, seen["report"]
    assert math.isfinite(seen["celeba_objective"])
