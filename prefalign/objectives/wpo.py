"""WPO: weight each preference pair by how likely the current policy is to produce it (on-policy reweighting)."""

from __future__ import annotations

import torch

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps


class WPO(Objective):
    r"""Weighted Preference Optimization (Zhou et al., 2024, "WPO: Enhancing RLHF with Weighted Preference
    Optimization", arXiv:2406.11827, Eq. 2 with the sampled-alignment normalisation); TRL's ``use_weighting=True``.

    Off-policy pairs are re-weighted to look on-policy: each pair's per-example loss :math:`\ell_i` of the wrapped
    objective is multiplied by :math:`w(x, y_w)\,w(x, y_l)`, where

    .. math:: w(x, y) = \exp\Big(\frac{1}{|y|}\sum_t \log\frac{\pi_\theta(y_t|x, y_{<t})}{\sum_v \pi_\theta(v|x, y_{<t})^2}\Big)

    (detached) is the response's probability relative to how the policy itself would sample, per token; for a
    classifier's one-label response :math:`w = p(y)/\sum_c p(c)^2`. The loss is :math:`\frac1B\sum_i w_{w,i}w_{l,i}\ell_i`,
    as in TRL. The family computes the weights (capability ``wpo_weights``: it needs the full output distribution),
    so a denoiser cannot use WPO. Objectives whose per-example losses are sorted within the batch (AOT) are refused.

    Args:
        objective: the objective whose per-example losses are re-weighted, e.g. ``{class_path: prefalign.objectives.DPO}``.

    Metrics: the wrapped objective's, plus ``wpo/weight`` (mean pair weight).
    """

    def __init__(self, objective: Objective) -> None:
        super().__init__()
        if objective.sorted_within_batch:
            raise ValueError(
                f"WPO cannot wrap {type(objective).__name__}: its per-example losses are sorted within the batch, "
                "so a weight per pair would land on the wrong example."
            )
        if not objective.needs_pairs:
            raise ValueError(
                f"WPO weights preference pairs (chosen × rejected weight); {type(objective).__name__} does not train on pairs."
            )
        self.objective = objective
        self.take_flags_of(objective)
        self.accepts_unpaired = False  # a pair weight needs a pair
        self.requires = frozenset(objective.requires) | {"wpo_weights"}

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        if lp.chosen_wpo_logweight is None or lp.rejected_wpo_logweight is None:
            raise ValueError(
                "WPO needs the pair's WPO weights, but the model family did not fill chosen/rejected_wpo_logweight."
            )
        out = self.objective(lp)
        if out.losses is None:
            raise ValueError(f"WPO needs per-example losses, and {type(self.objective).__name__} does not return them.")
        weights = torch.exp(lp.chosen_wpo_logweight + lp.rejected_wpo_logweight).detach()
        losses = out.losses * weights
        out.metrics["wpo/weight"] = weights.mean()
        return ObjectiveOutput(losses.mean(), out.metrics, losses)
