"""DPO variants that account for response length: TRL's ``sigmoid_norm`` and LD-DPO (``ld_alpha``)."""

from __future__ import annotations

import torch.nn.functional as F

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, per_token_logratios, preference_metrics
from prefalign.objectives.dpo import DPO, dpo_rewards
from prefalign.validation import check_in_range


class SigmoidNorm(Objective):
    r"""Length-normalised DPO, TRL's ``loss_type="sigmoid_norm"`` (TRL 1.16 ``DPOTrainer._compute_loss``).

    .. math:: \mathcal{L} = -\log\sigma\left(\beta\left(\frac{1}{|y_w|}\log\frac{\pi_\theta(y_w|x)}{\pi_{ref}(y_w|x)}
              - \frac{1}{|y_l|}\log\frac{\pi_\theta(y_l|x)}{\pi_{ref}(y_l|x)}\right)\right)

    Each log-ratio is averaged over its response's tokens before the margin is taken, so a longer response does
    not get a larger implicit reward for its length alone (the length bias of DPO; cf. SimPO, Meng et al., 2024,
    arXiv:2405.14734, which normalises the same way without a reference). Needs token counts from the family.

    Args:
        beta: inverse temperature of the normalised margin.

    Metrics: ``rewards/*`` with TRL's unnormalised reward :math:`\beta(\log\pi_\theta - \log\pi_{ref})`, ``logps/*``.
    """

    logratio_only = False  # the margin is taken after per-token normalisation, not on r alone
    requires = frozenset({"token_lengths"})

    def __init__(self, beta: float = 0.1) -> None:
        super().__init__()
        check_in_range("beta", beta, 0.0, low_open=True)
        self.beta = beta

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        chosen, rejected = per_token_logratios(lp)
        losses = -F.logsigmoid(self.beta * (chosen - rejected))
        metrics = preference_metrics(*dpo_rewards(lp, self.beta), lp.policy_chosen, lp.policy_rejected)
        return ObjectiveOutput(losses.mean(), metrics, losses)


class LDDPO(DPO):
    r"""Length-desensitised DPO (LD-DPO; Liu et al., 2024, "Length Desensitization in Directed Preference
    Optimization", arXiv:2409.06411), TRL's ``ld_alpha``.

    The DPO loss (:class:`DPO`) on re-weighted sequence log-probs: of a pair's two responses, the first
    :math:`\ell = \min(|y_w|, |y_l|)` tokens of each count in full and the longer response's remaining tokens
    are scaled by :math:`\alpha`,

    .. math:: \log\hat\pi(y|x) = \sum_{t \le \ell}\log\pi(y_t|x, y_{<t}) + \alpha\sum_{t > \ell}\log\pi(y_t|x, y_{<t})

    for the policy and the reference alike (and for the logged ``logps/*``, as TRL). :math:`\alpha = 1` is DPO;
    :math:`\alpha < 1` damps the length-driven part of the margin. The family computes the split (capability
    ``token_lengths``): the module passes ``ld_alpha`` to it.

    Args:
        beta, label_smoothing: as :class:`DPO`.
        ld_alpha: the weight :math:`\alpha \in [0, 1]` of the tokens past the shared length.
    """

    requires = frozenset({"token_lengths"})

    def __init__(self, beta: float = 0.1, ld_alpha: float = 0.5, label_smoothing: float = 0.0) -> None:
        super().__init__(beta=beta, label_smoothing=label_smoothing)
        check_in_range("ld_alpha", ld_alpha, 0.0, 1.0)
        self.ld_alpha = ld_alpha
