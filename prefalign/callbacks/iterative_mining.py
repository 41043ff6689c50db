"""Iterative (online) preference mining: every N epochs, re-mine the pairs with the current policy."""

from __future__ import annotations

from typing import Any

from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info

from prefalign.checkpoint import save_weights
from prefalign.data.preference_data import RemineablePreferenceData
from prefalign.validation import check_in_range


class IterativeMining(Callback):
    """Iterative DPO (Xu et al., 2023, "Some things are more CRINGE than others", arXiv:2312.16682; Xiong et al., 2024,
    arXiv:2312.11456): after every ``every_n_epochs`` training epochs, the current policy mines fresh pairs.

    The policy's weights are written to ``<run>/miners/epoch<N>.pt`` and handed to the data module's
    ``remine(path)``; the pairs are cached under a fingerprint that includes those weights' sha256, so every
    round is reproducible and never confused with the reference's pairs. The *reference* stays the frozen one: the
    cached reference log-probs of the new pairs are still the reference's, so the DPO loss keeps its anchor while the
    pairs track what the policy now gets wrong. The rounds are checkpoint state (here and in the data module's
    ``miners``): a fit resumed with ``--ckpt_path`` trains on the pairs it had and keeps counting towards
    ``max_rounds``. The train dataloader is rebuilt after each round (``trainer.reload_dataloaders_every_n_epochs``).
    Works for any family whose preference data module can re-mine
    (:class:`~prefalign.data.preference_data.RemineablePreferenceData`: ``remine(miner_path)``).

    Args:
        every_n_epochs: epochs between mining rounds (no round after the last epoch, nor once ``max_steps`` is reached).
        max_rounds: stop re-mining after this many rounds (default: no limit).
    """

    def __init__(self, every_n_epochs: int = 1, max_rounds: int | None = None) -> None:
        check_in_range("every_n_epochs", every_n_epochs, 1)
        if max_rounds is not None:
            check_in_range("max_rounds", max_rounds, 1)
        self.every_n_epochs, self.max_rounds = every_n_epochs, max_rounds
        self.rounds = 0

    def state_dict(self) -> dict[str, Any]:
        return {"rounds": self.rounds}  # a resumed fit counts its rounds towards max_rounds

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.rounds = int(state_dict.get("rounds", 0))

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = trainer.datamodule
        if not isinstance(datamodule, RemineablePreferenceData):
            raise ValueError(
                f"IterativeMining needs a preference data module that can re-mine (a `remine(miner_path)` method); "
                f"{type(datamodule).__name__} has none. Use e.g. prefalign.data.PreferenceDataModule."
            )
        trainer.reload_dataloaders_every_n_epochs = self.every_n_epochs

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        epoch = trainer.current_epoch + 1
        last_epoch = (
            trainer.max_epochs not in (None, -1) and epoch >= trainer.max_epochs
        )  # -1: bounded by max_steps only
        last_step = trainer.max_steps not in (None, -1) and trainer.global_step >= trainer.max_steps
        if (
            epoch % self.every_n_epochs
            or last_epoch
            or last_step
            or (self.max_rounds is not None and self.rounds >= self.max_rounds)
        ):
            return
        from prefalign.loggers import run_dir

        path = run_dir(trainer) / "miners" / f"epoch{epoch}.pt"  # a broadcast under DDP: every rank asks
        if trainer.is_global_zero:
            save_weights(pl_module.policy, path, {"epoch": epoch})
        trainer.strategy.barrier("prefalign-iterative-mining")
        trainer.datamodule.remine(str(path))
        self.rounds += 1
        stats = {f"{k}_round": v for k, v in trainer.datamodule.mining_stats.items()}
        for logger in trainer.loggers:
            logger.log_metrics({**stats, "mining/round": float(self.rounds)}, step=trainer.global_step)
        rank_zero_info(f"IterativeMining: round {self.rounds} after epoch {epoch} mined with {path}")
