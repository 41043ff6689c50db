"""What the text recipes' alignment data modules share: prompts drawn from the training split, and the text's
validation (the validation split's windows and held-out prompts) through a composed
:class:`~prefalign.data.hf.HFTextDataModule`, judged by :class:`~prefalign.families.hf.HFTextFamily`."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from prefalign.data.hf.text_windows import HFTextDataModule


def training_prompts(ids: Tensor, count: int, length: int, seed: int) -> Tensor:
    """``[count, length]`` token windows of the training split's ids at seeded random offsets (held-in prompts)."""
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(len(ids) - length, (count,), generator=g)
    return ids[starts.unsqueeze(1) + torch.arange(length)]


class TextValidation:
    """Mixin for a data module holding its text as ``self.text_data`` (an :class:`HFTextDataModule`): the text and
    held-out prompts :class:`~prefalign.families.hf.HFTextFamily` judges samples with, and the validation split's
    windows as the validation and test data (the LM loss)."""

    # What a reference recipe run for this data is given, so the base model learns the same text and split.
    reference_data_keys = HFTextDataModule.reference_data_keys
    text_data: HFTextDataModule

    @property
    def text(self) -> dict[str, str]:
        return self.text_data.text

    @property
    def eval_prompts(self) -> int:
        return self.text_data.eval_prompts

    def evaluation_prompts(self) -> tuple[Tensor, Tensor]:
        return self.text_data.evaluation_prompts()

    def share_trainer(self) -> None:
        """Hand the trainer to the text (DDP rank and world size for the validation windows)."""
        self.text_data.trainer = getattr(self, "trainer", None)

    def val_dataloader(self) -> Any:
        return self.text_data.val_dataloader()

    def test_dataloader(self) -> Any:
        return self.text_data.test_dataloader()


__all__ = ["TextValidation", "training_prompts"]
