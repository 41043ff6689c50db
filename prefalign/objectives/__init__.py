"""Objectives: small, pure losses over log-probabilities, each with a thin ``nn.Module`` wrapper for the config.

Preference objectives take a :class:`PairLogps` and return an :class:`ObjectiveOutput`; PPO-lite has its own
sample / reward / loss methods. Select one in YAML with ``class_path: prefalign.objectives.DPO``.
"""

from prefalign.objectives.base import Objective, ObjectiveOutput, PairLogps, logratio_diff, preference_metrics, validate_logps
from prefalign.objectives.dpo import DPO, dpo_loss, dpo_rewards
from prefalign.objectives.hinge import Hinge, hinge_loss
from prefalign.objectives.ipo import IPO, ipo_loss
from prefalign.objectives.kto import KTO, kto_loss, kto_reference_point
from prefalign.objectives.orpo import ORPO, log1mexp, log_odds, orpo_loss
from prefalign.objectives.ppo import (
    PPOLite,
    aggregate_token_loss,
    clipped_surrogate,
    estimated_kl,
    exact_kl,
    gather_logps,
    group_advantages,
    ppo_clip_loss,
    rloo_advantages,
)
from prefalign.objectives.rewards import CorrectLabelReward, RewardFunction, RewardModelConfidence
from prefalign.objectives.robust_dpo import RobustDPO, robust_dpo_loss
from prefalign.objectives.rpo import RPO, rpo_loss
from prefalign.objectives.sft import SFT, sft_loss
from prefalign.objectives.simpo import SimPO, simpo_loss

__all__ = [
    # interface
    "PairLogps",
    "ObjectiveOutput",
    "Objective",
    "validate_logps",
    "logratio_diff",
    "preference_metrics",
    # preference objectives
    "SFT",
    "DPO",
    "RobustDPO",
    "IPO",
    "Hinge",
    "RPO",
    "SimPO",
    "KTO",
    "ORPO",
    # PPO-lite
    "PPOLite",
    "RewardFunction",
    "CorrectLabelReward",
    "RewardModelConfidence",
    # pure functions
    "sft_loss",
    "dpo_loss",
    "dpo_rewards",
    "robust_dpo_loss",
    "ipo_loss",
    "hinge_loss",
    "rpo_loss",
    "simpo_loss",
    "kto_loss",
    "kto_reference_point",
    "orpo_loss",
    "log_odds",
    "log1mexp",
    "group_advantages",
    "rloo_advantages",
    "clipped_surrogate",
    "aggregate_token_loss",
    "estimated_kl",
    "ppo_clip_loss",
    "exact_kl",
    "gather_logps",
]
