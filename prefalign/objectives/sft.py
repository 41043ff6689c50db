"""Supervised fine-tuning: maximum likelihood of the chosen label."""

from __future__ import annotations

from torch import Tensor

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, preference_metrics


def sft_loss(policy_chosen: Tensor) -> Tensor:
    r"""Per-example negative log-likelihood :math:`-\log\pi_\theta(y_w|x)`, ``[B]``."""
    return -policy_chosen.float()


class SFT(Objective):
    r"""Supervised fine-tuning (cross-entropy on the chosen label).

    .. math:: \mathcal{L}_{SFT} = -\mathbb{E}_{(x, y_w)}\left[\log \pi_\theta(y_w|x)\right]

    Needs neither a reference model nor pairs. When the batch does carry a rejected label, the
    ``rewards/*`` metrics use the implicit reward :math:`r = \log\pi_\theta(y|x)` (scale 1), so SFT runs
    can be compared with preference runs on accuracy/margins.
    """

    needs_reference = False
    needs_pairs = False
    length_normalized = True  # per-token cross-entropy, as language-model pretraining reports it

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        losses = sft_loss(lp.policy_chosen)
        loss = losses.mean()
        metrics = preference_metrics(lp.policy_chosen, lp.policy_rejected, lp.policy_chosen, lp.policy_rejected)
        metrics["nll"] = loss.detach()
        return ObjectiveOutput(loss, metrics, losses)
