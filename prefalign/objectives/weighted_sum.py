"""A weighted sum of objectives in one run (MPO style), all on the same forward pass."""

from __future__ import annotations

from torch import nn

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps


class WeightedSum(Objective):
    r""":math:`\mathcal{L} = \sum_k w_k \mathcal{L}_k`, several objectives trained at once on the same log-probs; TRL's
    ``loss_type=[...]`` with ``loss_weights`` (used by Mixed Preference Optimization, Wang et al., 2024,
    arXiv:2411.10442, as sigmoid + BCO-pair + SFT).

    Needs what any part needs (reference, pairs, capabilities). All parts must agree on ``length_normalized``
    (one forward gives either summed or mean token log-probs). Metrics: the first objective's under their usual
    names, and every part's loss as ``loss/<ClassName>`` (``loss/<ClassName>_<k>`` when a class appears twice).

    Args:
        objectives: the parts, e.g. ``[{class_path: prefalign.objectives.DPO}, {class_path: prefalign.objectives.SFT}]``.
        weights: one per part; default all 1.
    """

    def __init__(self, objectives: list[Objective], weights: list[float] | None = None) -> None:
        super().__init__()
        if not objectives:
            raise ValueError("WeightedSum needs at least one objective.")
        weights = [1.0] * len(objectives) if weights is None else list(weights)
        if len(weights) != len(objectives):
            raise ValueError(
                f"WeightedSum: {len(objectives)} objectives but {len(weights)} weights; give one weight per objective."
            )
        if any(w < 0 or w != w for w in weights):
            raise ValueError(f"WeightedSum: weights must be ≥ 0, got {weights}.")
        if len({o.length_normalized for o in objectives}) > 1:
            names = ", ".join(f"{type(o).__name__}={o.length_normalized}" for o in objectives)
            raise ValueError(
                f"WeightedSum: the parts disagree on length_normalized ({names}): one forward pass cannot give both."
            )
        if len({o.ld_alpha for o in objectives}) > 1:
            names = ", ".join(f"{type(o).__name__}={o.ld_alpha}" for o in objectives)
            raise ValueError(
                f"WeightedSum: the parts disagree on ld_alpha ({names}): one forward pass cannot give both."
            )
        if any(not isinstance(o, Objective) for o in objectives):
            raise ValueError("WeightedSum combines preference objectives; PPO-lite runs on its own.")
        self.parts = nn.ModuleList(objectives)
        self.weights = weights
        self.needs_reference = any(o.needs_reference for o in objectives)
        self.needs_pairs = any(o.needs_pairs for o in objectives)
        self.accepts_unpaired = all(o.accepts_unpaired for o in objectives)
        self.requires = frozenset().union(*(o.requires for o in objectives))
        self.length_normalized = objectives[0].length_normalized
        self.ld_alpha = objectives[0].ld_alpha
        self.sorted_within_batch = any(o.sorted_within_batch for o in objectives)
        counts: dict[str, int] = {}
        for o in objectives:
            counts[type(o).__name__] = counts.get(type(o).__name__, 0) + 1
        seen: dict[str, int] = {}
        self._names = []
        for o in objectives:
            name = type(o).__name__
            seen[name] = seen.get(name, 0) + 1
            self._names.append(name if counts[name] == 1 else f"{name}_{seen[name]}")

    def forward(self, logps: PairLogps) -> ObjectiveOutput:
        lp = self.check(logps)
        outputs = [part(lp) for part in self.parts]
        loss = sum(w * out.loss for w, out in zip(self.weights, outputs))
        metrics = dict(outputs[0].metrics)
        for name, out in zip(self._names, outputs):
            metrics[f"loss/{name}"] = out.loss.detach()
        per_example = None
        if all(out.losses is not None for out in outputs) and not self.sorted_within_batch:
            per_example = sum(w * out.losses for w, out in zip(self.weights, outputs))
        return ObjectiveOutput(loss, metrics, per_example)
