"""The objective interface: per-example log-probabilities in, a scalar loss and scalar metrics out.

Every objective sees only log-probabilities (already log-softmaxed by the caller, in fp32), never logits or
images, so that each loss is a few lines of tensor algebra that can be checked by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from torch import Tensor, nn


@dataclass
class PairLogps:
    r"""Log-probabilities of one batch; every field is ``[B]``.

    ``policy_chosen``: :math:`\log\pi_\theta(y_w|x)`, ``policy_rejected``: :math:`\log\pi_\theta(y_l|x)`
    (None for SFT-only batches), ``reference_*``: the same under the frozen :math:`\pi_{ref}` (None without a
    reference model), ``kl``: exact :math:`KL(\pi_\theta(\cdot|x)\|\pi_{ref}(\cdot|x))` per example when the
    caller can compute it (10 classes); KTO uses it as its reference point.

    Unpaired data (KTO/BCO): ``desirable`` (bool ``[B]``) flags each response, which is in ``policy_chosen`` /
    ``reference_chosen``; ``policy_rejected`` is None. ``*_wpo_logweight``: the log of each response's WPO weight
    (detached), filled by families that can compute it when the objective asks for it (:class:`~prefalign.objectives.WPO`).
    ``*_length``: the number of tokens in each response, filled by sequence families (capability ``token_lengths``),
    for objectives that normalise a log-ratio per token (IPO and ``sigmoid_norm`` as TRL computes them).
    """

    policy_chosen: Tensor
    policy_rejected: Tensor | None
    reference_chosen: Tensor | None
    reference_rejected: Tensor | None
    kl: Tensor | None = None
    desirable: Tensor | None = None
    chosen_wpo_logweight: Tensor | None = None
    rejected_wpo_logweight: Tensor | None = None
    chosen_length: Tensor | None = None
    rejected_length: Tensor | None = None

    def float(self) -> PairLogps:
        # Objectives do their math in fp32 even when the backbone runs in bf16/fp16.
        return replace(
            self,
            **{
                f.name: getattr(self, f.name).float()
                for f in fields(self)
                if getattr(self, f.name) is not None and f.name != "desirable"
            },
        )

    @property
    def unpaired(self) -> bool:
        """Single responses flagged desirable/undesirable (KTO/BCO's unpaired data) instead of pairs."""
        return self.desirable is not None


@dataclass
class ObjectiveOutput:
    loss: Tensor  # scalar, differentiable
    metrics: dict[str, Tensor]  # 0-dim, detached; TRL names where they apply
    losses: Tensor | None = None  # per-example [B] whose mean is `loss`, for modifiers that re-weight examples (WPO)


class Objective(nn.Module):
    """Base class: subclasses set the flags and implement ``forward(PairLogps) -> ObjectiveOutput``.

    ``requires`` names what a model family must provide for this loss to make sense (see
    :data:`prefalign.families.base.CAPABILITIES`): e.g. ORPO needs ``true_logprob`` because it takes
    :math:`\log(1-p)`, which a denoiser's surrogate log-likelihood does not have. The module refuses such a
    pairing when it is built. ``length_normalized`` asks sequence families for the mean token log-prob
    instead of the sum (SimPO and ORPO are defined on it); a one-label response is unaffected.
    """

    needs_reference: bool = True  # reference_chosen/rejected are required
    needs_pairs: bool = True  # policy_rejected is required
    accepts_unpaired: bool = False  # also trains on single responses flagged desirable/undesirable (KTO, BCO)
    requires: frozenset[str] = frozenset()
    length_normalized: bool = False
    # For the modifiers: the loss reads the policy and reference only through r = log pi - log pi_ref (so an
    # f-divergence may replace r), and its per-example losses are in batch order (so WPO may re-weight them).
    logratio_only: bool = False
    sorted_within_batch: bool = False
    # LD-DPO's weight of the tokens past a pair's shared length: sequence families re-weight the log-probs with it
    # (the module passes it to ``pair_logps``); None: plain sums.
    ld_alpha: float | None = None

    def forward(self, logps: PairLogps) -> ObjectiveOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def take_flags_of(self, objective: Objective) -> None:
        """For modifiers that wrap an objective: start from its needs and properties (then override what differs)."""
        for name in (
            "needs_reference",
            "needs_pairs",
            "accepts_unpaired",
            "requires",
            "length_normalized",
            "logratio_only",
            "sorted_within_batch",
            "ld_alpha",
        ):
            setattr(self, name, getattr(objective, name))

    def check(self, logps: PairLogps) -> PairLogps:
        """Validate ``logps`` against this objective's needs and return an fp32 copy."""
        if logps.unpaired and not self.accepts_unpaired:
            raise ValueError(
                f"objective {type(self).__name__} trains on preference pairs, but the batch holds unpaired responses "
                "(data.init_args.unpaired: true); only KTO and BCO take unpaired data."
            )
        return validate_logps(logps, type(self).__name__, self.needs_reference, self.needs_pairs and not logps.unpaired)


def validate_logps(logps: PairLogps, name: str, needs_reference: bool, needs_pairs: bool) -> PairLogps:
    if needs_pairs and logps.policy_rejected is None:
        raise ValueError(
            f"objective {name} needs preference pairs (a rejected label per image) but policy_rejected is None; "
            "use PreferenceDataModule (SFT batches only carry the chosen label)."
        )
    if needs_reference and (logps.reference_chosen is None or (needs_pairs and logps.reference_rejected is None)):
        raise ValueError(
            f"objective {name} needs reference log-probs but the batch has none; set model.reference_ckpt to a "
            "weights file (e.g. the SFT checkpoint) so the frozen reference model is loaded."
        )
    pc = logps.policy_chosen
    if pc.dim() != 1:
        raise ValueError(
            f"objective {name}: policy_chosen must be [B] (one log-prob per example), got shape {tuple(pc.shape)}."
        )
    for f in fields(logps):
        t = getattr(logps, f.name)
        if t is not None and t.shape != pc.shape:
            raise ValueError(
                f"objective {name}: {f.name} has shape {tuple(t.shape)} but policy_chosen has {tuple(pc.shape)}; all fields must be [B]."
            )
    return logps.float()


def logratio_diff(
    policy_chosen: Tensor, policy_rejected: Tensor, reference_chosen: Tensor, reference_rejected: Tensor
) -> Tensor:
    r""":math:`h = (\log\pi_\theta(y_w) - \log\pi_{ref}(y_w)) - (\log\pi_\theta(y_l) - \log\pi_{ref}(y_l))`, ``[B]`` (TRL's ``logits``)."""
    return (policy_chosen.float() - reference_chosen.float()) - (policy_rejected.float() - reference_rejected.float())


def per_token_logratios(logps: PairLogps) -> tuple[Tensor, Tensor]:
    r"""Each response's log-ratio :math:`\log\pi_\theta(y|x) - \log\pi_{ref}(y|x)` divided by its token count when the
    family gives counts (TRL's IPO and ``sigmoid_norm``), as it is otherwise (a one-label response)."""
    chosen = logps.policy_chosen - logps.reference_chosen
    rejected = logps.policy_rejected - logps.reference_rejected
    if logps.chosen_length is not None and logps.rejected_length is not None:
        chosen = chosen / logps.chosen_length.clamp(min=1)
        rejected = rejected / logps.rejected_length.clamp(min=1)
    return chosen, rejected


def preference_metrics(
    chosen_rewards: Tensor | None,
    rejected_rewards: Tensor | None,
    policy_chosen: Tensor,
    policy_rejected: Tensor | None = None,
) -> dict[str, Tensor]:
    """TRL-named batch means: ``rewards/{chosen,rejected,margins,accuracies}`` and ``logps/{chosen,rejected}``.

    The caller decides what a reward is (``beta * (logp - ref_logp)`` for DPO-like losses, an implicit
    reward for reference-free ones); reward keys are omitted when either side is None.
    """
    m = {"logps/chosen": policy_chosen.detach().float().mean()}
    if policy_rejected is not None:
        m["logps/rejected"] = policy_rejected.detach().float().mean()
    if chosen_rewards is not None and rejected_rewards is not None:
        c, r = chosen_rewards.detach().float(), rejected_rewards.detach().float()
        m["rewards/chosen"] = c.mean()
        m["rewards/rejected"] = r.mean()
        m["rewards/margins"] = (c - r).mean()
        m["rewards/accuracies"] = (c > r).float().mean()
    return m


def unpaired_metrics(rewards: Tensor, logps: Tensor, desirable: Tensor) -> dict[str, Tensor]:
    """``rewards/{chosen,rejected,margins}`` and ``logps/{chosen,rejected}`` over the desirable / undesirable
    responses of an unpaired batch (TRL's KTO names); a side with no responses in the batch reads 0."""
    d = desirable.bool()
    u = ~d
    rewards, logps = rewards.detach().float(), logps.detach().float()

    def mean(x: Tensor, m: Tensor) -> Tensor:
        return (x * m).sum() / m.sum().clamp(min=1)

    m = {
        "logps/chosen": mean(logps, d),
        "logps/rejected": mean(logps, u),
        "rewards/chosen": mean(rewards, d),
        "rewards/rejected": mean(rewards, u),
    }
    m["rewards/margins"] = m["rewards/chosen"] - m["rewards/rejected"]
    return m


__all__ = [
    "PairLogps",
    "ObjectiveOutput",
    "Objective",
    "validate_logps",
    "logratio_diff",
    "per_token_logratios",
    "preference_metrics",
    "unpaired_metrics",
]
