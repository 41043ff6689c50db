"""The language-model family: character-level decoders (the tiny-transformer notebook's TinyTransformer) on text."""

from prefalign.families.language.family import LanguageFamily

__all__ = ["LanguageFamily"]
