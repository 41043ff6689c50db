"""Reference-free mode for any reference objective: a uniform reference, log pi_ref = 0."""

from __future__ import annotations

from dataclasses import replace

import torch

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps


class ReferenceFree(Objective):
    r"""Runs the wrapped objective with :math:`\log\pi_{ref} \equiv 0` (an implicit uniform reference); TRL's
    ``reference_free=True``.

    DPO then becomes :math:`-\log\sigma(\beta(\log\pi_\theta(y_w) - \log\pi_\theta(y_l)))` and the implicit rewards
    are :math:`\beta\log\pi_\theta(y)`. No reference model is needed for the loss (one is still used, when given,
    to mine pairs and for the logged KL and reference metrics). Nothing anchors the policy any more: expect it to
    move further than with a reference.

    Args:
        objective: an objective that needs a reference, e.g. ``{class_path: prefalign.objectives.DPO}``.
    """

    def __init__(self, objective: Objective) -> None:
        super().__init__()
        if not objective.needs_reference:
            raise ValueError(
                f"ReferenceFree wraps objectives that use a reference; {type(objective).__name__} already needs none."
            )
        self.objective = objective
        self.take_flags_of(objective)
        self.needs_reference = False

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        zero = torch.zeros_like(lp.policy_chosen)
        return self.objective(
            replace(lp, reference_chosen=zero, reference_rejected=None if lp.policy_rejected is None else zero)
        )
