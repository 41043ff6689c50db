"""Every preference objective is finite and differentiable on random log-probs at each family's scale.

Classifier: one label's log-prob (-20 to 0); language model: summed token log-probs (-600 to 0); denoiser: the
surrogate -1/2 mean-pixel squared error (-3 to 0). Policy and reference drift apart by up to the same scale.
"""

import inspect

import pytest
import torch

import prefalign.objectives as objectives
from prefalign.objectives import Objective, PairLogps

WRAPPED = {
    "FDivergence": lambda: objectives.FDivergence(objectives.DPO(), divergence="alpha_divergence", alpha=0.5),
    "WPO": lambda: objectives.WPO(objectives.IPO()),
    "WeightedSum": lambda: objectives.WeightedSum(
        [objectives.DPO(), objectives.BCO(), objectives.APOZero()], weights=[1.0, 0.5, 0.2]
    ),
    "ReferenceFree": lambda: objectives.ReferenceFree(objectives.RPO()),
}
NAMES = sorted(
    n for n, o in vars(objectives).items() if inspect.isclass(o) and issubclass(o, Objective) and o is not Objective
)
SCALES = {"classifier": 20.0, "language_model": 600.0, "denoiser": 3.0}


def random_logps(scale: float, batch: int, seed: int, unpaired: bool) -> PairLogps:
    g = torch.Generator().manual_seed(seed)

    def u():
        return -scale * torch.rand(batch, generator=g)

    pc, pr = u().requires_grad_(), u().requires_grad_()
    return PairLogps(
        pc,
        None if unpaired else pr,
        u(),
        None if unpaired else u(),
        kl=scale * torch.rand(batch, generator=g) / 10,
        desirable=(torch.rand(batch, generator=g) < 0.5) if unpaired else None,
        chosen_wpo_logweight=-torch.rand(batch, generator=g),
        rejected_wpo_logweight=-torch.rand(batch, generator=g),
    )


@pytest.mark.parametrize("scale", sorted(SCALES))
@pytest.mark.parametrize("name", NAMES)
def test_finite_and_differentiable(name, scale):
    build = WRAPPED.get(name, getattr(objectives, name))
    for seed, batch in enumerate((1, 7, 64)):
        for unpaired in (False, True):
            objective = build()
            if unpaired and not objective.accepts_unpaired:
                continue
            lp = random_logps(SCALES[scale], batch, seed, unpaired)
            out = objective(lp)
            assert out.loss.dim() == 0 and torch.isfinite(out.loss), (name, seed, unpaired, out.loss)
            out.loss.backward()
            assert lp.policy_chosen.grad is not None and torch.isfinite(lp.policy_chosen.grad).all()
            if lp.policy_rejected is not None and objective.needs_pairs:
                assert lp.policy_rejected.grad is not None and torch.isfinite(lp.policy_rejected.grad).all()
            assert all(torch.isfinite(v).all() for v in out.metrics.values()), name


@pytest.mark.parametrize("name", NAMES)
def test_finite_at_extreme_margins(name):
    # A language model's summed log-probs can differ by thousands of nats: no exp() may overflow into inf or NaN.
    for margin in (-3000.0, 3000.0):
        objective = WRAPPED.get(name, getattr(objectives, name))()
        pc = torch.tensor([-10.0, -10.0 + margin / 2], requires_grad=True)
        pr = torch.tensor([-10.0 - margin, -10.0 - margin / 2], requires_grad=True)
        lp = PairLogps(
            pc,
            pr,
            torch.tensor([-10.0, -10.0]),
            torch.tensor([-10.0, -10.0]),
            kl=torch.zeros(2),
            chosen_wpo_logweight=torch.zeros(2),
            rejected_wpo_logweight=torch.zeros(2),
        )
        out = objective(lp)
        out.loss.backward()
        assert torch.isfinite(out.loss) and torch.isfinite(pc.grad).all(), (name, margin, out.loss)
        assert pr.grad is None or torch.isfinite(pr.grad).all(), (name, margin)
