"""What every shipped preference data module shares: which weights mine the pairs, and the cache of what they mined.

The classifier's, the text and the image pair modules differ in how they mine; they find the reference and cache the
result the same way, here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from prefalign.checkpoint import CheckpointError
from prefalign.data.pair_cache import load_or_build
from prefalign.digests import file_sha256, fingerprint


class MinedPairs:
    """Mixin for a ``LightningDataModule`` that mines preference pairs (it then satisfies
    :class:`~prefalign.data.preference_data.PreferenceData`).

    The subclass calls :meth:`init_mining` in its constructor, resolves the mining weights with
    :meth:`mining_reference` in ``setup``, and gets its pairs from :meth:`cached_pairs`, which mines only when the
    cache has no file for this fingerprint. A subclass that can ``remine(miner_path)`` appends each round's weights
    file to ``miners``; they are the data module's checkpoint state, so a resumed fit trains on the pairs it had.
    """

    reference_ckpt: str | None
    cache_dir: str
    pairs: dict[str, Any]
    mining_stats: dict[str, float]
    miners: list[str]

    def init_mining(self, reference_ckpt: str | None, cache_dir: str) -> None:
        self.reference_ckpt, self.cache_dir = reference_ckpt, cache_dir
        self.pairs = {}
        self.mining_stats = {}
        self.miners = []  # the weights files that re-mined the pairs, round by round (IterativeMining)

    def state_dict(self) -> dict[str, Any]:
        """What Lightning saves in a checkpoint: the rounds' miners (the pairs themselves are in the cache)."""
        return {"miners": list(self.miners)} if self.miners else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """On a fit resumed from a checkpoint taken after re-mining rounds, replay the rounds (the cache holds their
        pairs), so training goes on with the pairs it had rather than the reference's. Other stages need no pairs."""
        miners = list(state.get("miners", []))
        trainer = getattr(self, "trainer", None)
        if not miners or trainer is None or trainer.state.fn != "fit":
            return
        missing = next((m for m in miners if not Path(m).is_file()), None)
        if missing is not None:
            raise CheckpointError(
                f"the checkpoint's pairs were re-mined with {missing}, which is missing; put the run's miners/ folder "
                "back, or fit again without --ckpt_path."
            )
        self.miners = []
        for path in miners:
            self.remine(path)  # type: ignore[attr-defined]  # only modules that remine record miners

    def mining_reference(self, hint: str) -> str:
        """The weights file that mines: this data module's ``reference_ckpt``, else the model's. ``hint`` says how to
        make it, for the error when it is missing."""
        module = getattr(getattr(self, "trainer", None), "lightning_module", None)
        path = self.reference_ckpt or getattr(module, "reference_ckpt", None)
        if path is None:
            raise CheckpointError(
                f"{type(self).__name__} mines pairs with a reference: set model.reference_ckpt "
                f"(or data.init_args.reference_ckpt); {hint}."
            )
        if not Path(path).is_file():
            raise CheckpointError(
                f"reference checkpoint not found: {path} ({type(self).__name__} mines pairs with it). {hint[0].upper()}{hint[1:]} "
                "(an alignment config with a reference_recipe trains it first)."
            )
        return path

    def cached_pairs(self, prefix: str, weights: str, key: dict[str, Any], build: Callable[[], dict]) -> dict:
        """What ``build()`` mines with the weights file ``weights``, from ``<cache_dir>/<prefix>-<fingerprint>.pt``.

        The fingerprint hashes ``key`` (every other ingredient of the mining) and the sha256 of ``weights``, so a
        changed ingredient is a new file and a stale cache is never read. Under DDP rank 0 mines; every rank reads."""
        digest = fingerprint({"reference_sha256": file_sha256(weights), **key})
        return load_or_build(
            Path(self.cache_dir) / f"{prefix}-{digest}.pt", digest, build, getattr(self, "trainer", None)
        )


__all__ = ["MinedPairs"]
