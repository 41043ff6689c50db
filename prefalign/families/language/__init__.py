"""The language-model family: character-level decoders (seed 002's TinyTransformer) on text."""

from prefalign.families.language.family import LanguageFamily

__all__ = ["LanguageFamily"]
