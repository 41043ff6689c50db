"""The model-family seam: what a kind of model must provide so the shared core can align it.

The core (:mod:`prefalign.core`) and the objectives (:mod:`prefalign.objectives`) know nothing about images,
tokens or noise levels. A *family* adapts one kind of model to what objectives consume:

* :meth:`ModelFamily.pair_logps` — a batch in, per-example log-probabilities of the chosen and rejected
  responses under the policy and the reference out (:class:`~prefalign.objectives.PairLogps`). A classifier's
  response is one label; a language model's is a masked token sequence (summed token log-probs); a denoiser's
  "log-probability" is a surrogate (−½·mean-pixel denoising error at a shared (t, ε)).
* :meth:`ModelFamily.rollout` / :meth:`ModelFamily.response_logps` — for RL (PPO-lite): k responses sampled
  per prompt with their token log-probs and mask, and the same log-probs re-computed under any model.
* evaluation: :meth:`eval_step` / :meth:`eval_epoch_end` / :meth:`predict_step` — metrics and figures belong
  to the family.

What a family can provide is declared in :attr:`ModelFamily.capabilities`; an objective declares what it
``requires``; the module refuses an objective whose needs the family does not meet, at construction time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from torch import Tensor, nn

from prefalign.families.registry import families_supporting
from prefalign.objectives.base import PairLogps

# The capability vocabulary, with the reason an objective needs each (shown when it is refused).
CAPABILITIES: dict[str, str] = {
    "true_logprob": "true, normalised log-probabilities (log p ≤ 0, so that log(1 − p) exists)",
    "exact_kl": "the exact KL(policy‖reference) over the whole output distribution",
    "sampling": "responses sampled from the policy with their log-probabilities (RL)",
    "token_lengths": "responses that are token sequences, with each response's token count and per-token log-probs "
    "(per-token normalisation of a log-ratio, LD-DPO's split of a pair at its shared length)",
    "wpo_weights": "each response's WPO weight, its probability under the policy's own sampling distribution token by "
    "token (log p(y_t) − log Σ_v p(v)²), which needs the full output distribution",
}

Forward = Callable[[Tensor], Any]  # a model's (possibly compiled) forward


@dataclass
class Rollout:
    """k sampled responses per prompt, everything shaped ``[B, k, T]`` (``T`` = response length; 1 for a label).

    ``batch``: the prompts' batch as the data module made it (rewards read the inputs and labels from it);
    ``responses``: sampled token ids / labels (long); ``mask``: True where a response token is real (padding
    and anything after an end token is False); ``old_logps``: the sampling policy's log-probs of each
    response token, computed exactly as :meth:`ModelFamily.response_logps` computes them, so the first PPO
    ratio is exactly 1; ``metrics``: scalars the family (completion lengths) or the reward (per-function means)
    measured on this rollout, logged with the step under ``train/`` (a family may leave it empty).
    """

    batch: dict[str, Tensor]
    responses: Tensor
    mask: Tensor
    old_logps: Tensor
    metrics: dict[str, Tensor] = field(default_factory=dict)


@dataclass
class ResponseLogps:
    """A model's log-probs of a :class:`Rollout`'s responses.

    ``tokens [B, k, T]``: log-prob of each response token. ``dist``: the full log-softmax over the vocabulary at
    each response position, broadcastable to ``[B, k, T, V]`` (a classifier returns ``[B, 1, 1, C]``: one
    distribution per prompt), or None when the family cannot afford it — then PPO-lite estimates the KL from
    ``tokens`` alone (k1/k3).
    """

    tokens: Tensor
    dist: Tensor | None = None


class ModelFamily(nn.Module):
    """Adapts one kind of model (classifier, language model, denoiser, ...) to the shared alignment core.

    A family is an ``nn.Module`` so that its evaluation metrics (torchmetrics) follow the LightningModule to its
    device and are synchronised across DDP ranks. It holds no trainable parameters and is not saved in weights
    files. Subclasses set :attr:`capabilities` and :attr:`summary_keys` and implement the methods below; see the
    README's "Add a model family" for a walkthrough.
    """

    capabilities: frozenset[str] = frozenset()
    #: test-metric suffixes printed after ``fit``/``test`` (``acc_noisy`` → ``test/acc_noisy``).
    summary_keys: tuple[str, ...] = ()
    #: the validation metric a progress line or checkpoint monitor should watch.
    main_metric: str | None = None
    #: names under which this family logs the objective's RL metrics (e.g. ``ppo/kl`` as TRL's ``kl``); others keep theirs.
    metric_names: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle
    def check_config(self, policy: nn.Module, datamodule: Any) -> None:
        """Refuse a model/data combination this family cannot run. The CLI calls it before the trainer starts,
        so a bad config stops with nothing written; raise ``ValueError`` naming the setting to change."""

    def check_objective(self, objective: nn.Module, datamodule: Any) -> None:
        """Refuse an objective this family can run but not on this data (e.g. RL on preference pairs); called by the
        CLI right after :meth:`check_config`, before anything is written. Raise ``ValueError`` naming the fix."""

    def setup(self, module: Any, stage: str) -> None:
        """Called from the LightningModule's ``setup``: check the data against the model, build metrics."""

    def on_fit_start(self, module: Any) -> None:
        """Called from the LightningModule's ``on_fit_start``: the models are on their devices and wrapped (DDP) or
        sharded (FSDP) by now, so work that runs them once before training (caching reference log-probs) goes here."""

    def weights_meta(self) -> dict[str, Any]:
        """What a weights file of this family's model must carry besides the model (e.g. a denoiser's noise schedule)."""
        return {}

    # ------------------------------------------------------------------ preference training
    def pair_logps(
        self,
        policy: Forward,
        reference: nn.Module | None,
        batch: dict[str, Tensor],
        recompute_reference: bool = False,
        length_normalized: bool = False,
        wpo_weights: bool = False,
    ) -> PairLogps:
        """Per-example log-probs of the batch's chosen (and, if present, rejected) responses.

        ``reference`` is None when the objective needs no reference; the family then still uses reference
        log-probs cached in the batch (for logging the KL) unless ``recompute_reference``. ``length_normalized``
        asks for the mean token log-prob instead of the sum (SimPO, ORPO). ``wpo_weights`` (only asked of
        families with the ``wpo_weights`` capability) fills ``*_wpo_logweight``. A batch of unpaired responses
        carries ``desirable``: pass it on. Policy log-probs must carry gradients; reference log-probs must not.
        All fields fp32 ``[B]``.
        """
        raise NotImplementedError(f"{type(self).__name__} does not implement pair_logps")

    # ------------------------------------------------------------------ RL
    def rollout(self, policy: Forward, batch: dict[str, Tensor], k: int) -> Rollout:
        """Sample ``k`` responses per prompt from ``policy`` (no gradients). Families with ``sampling``."""
        raise NotImplementedError(f"{type(self).__name__} cannot sample responses (no 'sampling' capability)")

    def response_logps(self, model: Forward, rollout: Rollout) -> ResponseLogps:
        """``model``'s log-probs of the rollout's responses (with gradients when ``model`` is the policy in grad mode)."""
        raise NotImplementedError(f"{type(self).__name__} cannot score sampled responses (no 'sampling' capability)")

    # ------------------------------------------------------------------ evaluation
    def teardown(self, stage: str) -> None:
        """Drop per-run caches (called from the LightningModule's ``teardown``)."""

    def eval_step(self, module: Any, batch: dict[str, Tensor], stage: str) -> None:
        """Update this family's metrics for one validation/test batch (``stage`` is ``val`` or ``test``)."""

    def eval_epoch_end(self, module: Any, stage: str) -> None:
        """Log the epoch's metrics (``module.log_dict``) and figures, then reset."""

    def predict_step(self, module: Any, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        raise NotImplementedError(f"{type(self).__name__} has no predict step")

    def predict_summary(self, merged: dict[str, Tensor]) -> str:
        """One line describing merged predictions (printed by ``predict``)."""
        return f"{len(next(iter(merged.values())))} predictions"


def masked_sum(values: Tensor, mask: Tensor) -> Tensor:
    """Sum over the last dim of ``values`` where ``mask`` is True (fp32)."""
    return (values.float() * mask).sum(-1)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the last dim of ``values`` where ``mask`` is True; rows with no True entry give 0 (fp32)."""
    return masked_sum(values, mask) / mask.sum(-1).clamp(min=1)


def check_capabilities(objective: nn.Module, family: ModelFamily) -> None:
    """Refuse an objective whose declared needs this family does not meet, naming the reason."""
    needs = frozenset(getattr(objective, "requires", frozenset()))
    missing = sorted(needs - family.capabilities)
    if missing:
        reasons = "; ".join(f"{m}: {CAPABILITIES.get(m, m)}" for m in missing)
        able = families_supporting(needs)
        raise ValueError(
            f"objective {type(objective).__name__} cannot train a {type(family).__name__} model: it needs {reasons}, "
            f"which this family does not provide (it provides: {', '.join(sorted(family.capabilities)) or 'none of them'}). "
            + (
                f"The registered families that can run it: {', '.join(able)}."
                if able
                else "No registered family can run it."
            )
        )


__all__ = ["CAPABILITIES", "ModelFamily", "Rollout", "ResponseLogps", "masked_sum", "masked_mean", "check_capabilities"]
