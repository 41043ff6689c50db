"""Data in TRL's formats for Hugging Face models (``pip install -e ".[hf]"``): preference data, and prompt-only data
for online RL."""

from prefalign.data.hf.datamodule import TRLPreferenceDataModule
from prefalign.data.hf.prompts import TRLPromptDataModule

__all__ = ["TRLPreferenceDataModule", "TRLPromptDataModule"]
