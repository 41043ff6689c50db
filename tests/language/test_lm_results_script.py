"""scripts/lm_results.py: the n-gram baselines it reports, by hand."""

import importlib.util
import math

import torch

from tests.conftest import REPO


def load():
    spec = importlib.util.spec_from_file_location("lm_results", REPO / "scripts/lm_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ngram_baselines_by_hand():
    # train 0 1 0 1: unigram counts + 1 = (3, 3) -> p = 1/2; bigram counts 0->1: 2, 1->0: 1, + 1 each -> p(1|0) = 3/4
    out = load().ngram_baselines(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1]), 2)
    assert math.isclose(out["unigram"], math.log(2), rel_tol=1e-9)
    assert math.isclose(out["bigram"], -math.log(0.75), rel_tol=1e-9)
