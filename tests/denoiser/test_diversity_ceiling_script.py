"""scripts/diffusion_diversity_ceiling.py: the diversity a policy could keep if it fixed errors without changing styles."""

import pytest
import torch

from prefalign.families.denoiser.metrics import within_class_diversity
from tests.conftest import load_script


def load():
    return load_script("diffusion_diversity_ceiling")


def test_ceiling_by_hand():
    ceiling = load().diversity_if_errors_fixed
    # one class: right samples at 0 and 2 (d_rr = 2), one wrong at 10 (d_rw = (10 + 8) / 2 = 9); N = 3
    features, labels = torch.tensor([[0.0], [2.0], [10.0]]), torch.zeros(3, dtype=torch.long)
    correct = torch.tensor([True, True, False])
    assert ceiling(features, labels, correct, 1.0) == pytest.approx(within_class_diversity(features, labels))  # 20/3
    assert ceiling(features, labels, correct, 0.0) == pytest.approx(2.0)  # every sample right: d_rr
    # kept 0.5: r = 2.5, w = 0.5: (2.5·1.5·2 + 2·2.5·0.5·9 + 0) / 6 = (7.5 + 22.5) / 6
    assert ceiling(features, labels, correct, 0.5) == pytest.approx(5.0)
    # a second class without errors only adds its own d_rr (4) to the mean over classes
    two = torch.cat([features, torch.tensor([[0.0], [4.0]])])
    assert ceiling(two, torch.tensor([0, 0, 0, 1, 1]), torch.cat([correct, torch.tensor([True, True])]), 0.0) == (
        pytest.approx(3.0)
    )


def test_style_retention_reads_only_the_samples_both_get_right():
    retention = load().style_retention
    labels = torch.zeros(4, dtype=torch.long)
    reference = torch.tensor([[0.0], [4.0], [100.0], [7.0]])
    policy = torch.tensor([[1.0], [3.0], [0.0], [-50.0]])  # the last two differ wildly but are not both right
    both = torch.tensor([True, True, False, False])
    assert retention(policy, reference, labels, both) == pytest.approx(2.0 / 4.0)
