"""Text data for the language-model family: the verified Shakespeare corpus, a character tokenizer, the data module."""

from prefalign.data.text.char_tokenizer import CharTokenizer, UnknownCharacterError
from prefalign.data.text.datamodule import CharTextDataModule, synthetic_text
from prefalign.data.text.preference import TextPreferenceDataModule

__all__ = ["CharTokenizer", "CharTextDataModule", "TextPreferenceDataModule", "UnknownCharacterError", "synthetic_text"]
