"""The preference-data contract: what the alignment core reads from a data module that mines preference pairs.

A *preference data module* is a ``LightningDataModule`` whose training batches are mined pairs. The core never
imports one: :class:`~prefalign.core.module.AlignmentModule` and :class:`~prefalign.callbacks.IterativeMining` read
only the members listed here, so a new family's data module fits by providing them (the shipped ones do, through
:class:`~prefalign.data.mined_pairs.MinedPairs`).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class PreferenceData(Protocol):
    """What :class:`~prefalign.core.module.AlignmentModule` reads from a preference data module.

    ``pairs``: the mined training pairs, tensors by batch key (empty until ``setup("fit")``). An objective that needs
    pairs is refused with any data module that is not a ``PreferenceData``. The pairs may carry the reference's
    log-probs computed once at mining time (the classifier's ``ref_logps``): the family then reads them from the batch
    instead of running the reference on every step.

    ``reference_ckpt``: the weights that mine the pairs and whose log-probs are cached; None means the model's
    ``reference_ckpt``.

    ``mining_stats``: numbers about the mining (pairs, pool size, the reference's accuracy on the pool, ...), logged
    by every logger at step 0 of a fit and after each re-mining round.
    """

    pairs: dict[str, Tensor]
    reference_ckpt: str | None
    mining_stats: dict[str, float]


@runtime_checkable
class RemineablePreferenceData(PreferenceData, Protocol):
    """Preference data that can be mined again by other weights: what :class:`~prefalign.callbacks.IterativeMining` needs."""

    def remine(self, miner_path: str) -> None:
        """Replace ``pairs`` (and ``mining_stats``) with ones mined by the weights file ``miner_path`` (the current
        policy); cached reference log-probs stay the reference's. Keep the previous pairs if none are found."""
        ...


__all__ = ["PreferenceData", "RemineablePreferenceData"]
