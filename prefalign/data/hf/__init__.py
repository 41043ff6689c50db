"""Preference data in TRL's formats for Hugging Face models (``pip install -e ".[hf]"``)."""

from prefalign.data.hf.datamodule import TRLPreferenceDataModule

__all__ = ["TRLPreferenceDataModule"]
