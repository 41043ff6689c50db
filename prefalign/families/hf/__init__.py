"""The Hugging Face causal-LM family (``pip install -e ".[hf]"``): :class:`HFCausalLMFamily`, and the TRL-style
rewards for online RL on it (:class:`TRLRewards`, :class:`RewardModel`)."""

from prefalign.families.hf.family import HFCausalLMFamily
from prefalign.families.hf.reward_funcs import TargetLength
from prefalign.families.hf.rewards import RewardModel, TRLRewards

__all__ = ["HFCausalLMFamily", "TRLRewards", "RewardModel", "TargetLength"]
