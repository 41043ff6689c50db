"""Data for Hugging Face models (``pip install -e ".[hf]"``): preference and prompt-only data in TRL's formats, and a
text corpus in the model's tokens (windows to pretrain on, preference pairs mined from the model itself, held-in
prompts for online RL)."""

from prefalign.data.hf.datamodule import TRLPreferenceDataModule
from prefalign.data.hf.prompts import TRLPromptDataModule
from prefalign.data.hf.text_pairs import TextPairsDataModule
from prefalign.data.hf.text_prompts import TextPromptsDataModule
from prefalign.data.hf.text_windows import HFTextDataModule

__all__ = [
    "HFTextDataModule",
    "TRLPreferenceDataModule",
    "TRLPromptDataModule",
    "TextPairsDataModule",
    "TextPromptsDataModule",
]
