"""Text data for the language-model family: the verified Shakespeare corpus, the tokenizers (characters, or GPT-2's BPE
with the ``bpe`` extra), the data modules."""

from prefalign.data.text.bpe_tokenizer import BPETokenizer
from prefalign.data.text.char_tokenizer import CharTokenizer, UnknownCharacterError
from prefalign.data.text.datamodule import CharTextDataModule, synthetic_text
from prefalign.data.text.model_tokenizer import TokenizerMismatchError
from prefalign.data.text.preference import TextPreferenceDataModule

__all__ = [
    "BPETokenizer",
    "CharTokenizer",
    "CharTextDataModule",
    "TextPreferenceDataModule",
    "TokenizerMismatchError",
    "UnknownCharacterError",
    "synthetic_text",
]
