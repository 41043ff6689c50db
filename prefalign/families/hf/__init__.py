"""The Hugging Face causal-LM family (``pip install -e ".[hf]"``): :class:`HFCausalLMFamily`, and
:class:`HFTextFamily` for a text corpus judged by the valid-word rate of samples."""

from prefalign.families.hf.family import HFCausalLMFamily
from prefalign.families.hf.text_family import HFTextFamily

__all__ = ["HFCausalLMFamily", "HFTextFamily"]
