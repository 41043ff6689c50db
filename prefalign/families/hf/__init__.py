"""The Hugging Face causal-LM family (``pip install -e ".[hf]"``): :class:`HFCausalLMFamily`, the TRL-style rewards
for online RL on it (:class:`TRLRewards`, :class:`RewardModel`, :class:`ValidWords`), and :class:`HFTextFamily` for a text corpus judged by
the valid-word rate of samples; :class:`HFCausalLMFromConfig` builds such a model from a config, with a locally trained
tokenizer."""

from prefalign.families.hf.family import HFCausalLMFamily
from prefalign.families.hf.model_from_config import HFCausalLMFromConfig
from prefalign.families.hf.reward_funcs import TargetLength, ValidWords
from prefalign.families.hf.rewards import RewardModel, TRLRewards
from prefalign.families.hf.text_family import HFTextFamily

__all__ = [
    "HFCausalLMFamily",
    "HFCausalLMFromConfig",
    "HFTextFamily",
    "TRLRewards",
    "RewardModel",
    "TargetLength",
    "ValidWords",
]
