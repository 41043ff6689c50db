"""Preference data in TRL's formats for Hugging Face models (``pip install -e ".[hf]"``), and a text corpus in the
model's tokens: windows to pretrain on, and preference pairs mined from the model itself."""

from prefalign.data.hf.datamodule import TRLPreferenceDataModule
from prefalign.data.hf.text_pairs import TextPairsDataModule
from prefalign.data.hf.text_windows import HFTextDataModule

__all__ = ["HFTextDataModule", "TRLPreferenceDataModule", "TextPairsDataModule"]
