"""The Hugging Face causal-LM family (``pip install -e ".[hf]"``): :class:`HFCausalLMFamily`."""

from prefalign.families.hf.family import HFCausalLMFamily

__all__ = ["HFCausalLMFamily"]
