"""Objectives: small, pure losses over log-probabilities, each with a thin ``nn.Module`` wrapper for the config.

Preference objectives take a :class:`PairLogps` and return an :class:`ObjectiveOutput`; PPO-lite has its own
sample / reward / loss methods. Select one in YAML with ``class_path: prefalign.objectives.DPO``.
"""

from prefalign.objectives.aot import AOT, AOTPair, aot_loss, aot_pair_loss
from prefalign.objectives.apo import APODown, APOZero, apo_down_loss, apo_zero_loss
from prefalign.objectives.base import (
    Objective,
    ObjectiveOutput,
    PairLogps,
    logratio_diff,
    preference_metrics,
    unpaired_metrics,
    validate_logps,
)
from prefalign.objectives.bco import BCO, bco_pair_loss, bco_unpaired_loss
from prefalign.objectives.cpo import CPO, cpo_loss
from prefalign.objectives.discopop import DiscoPOP, discopop_loss
from prefalign.objectives.dpo import DPO, dpo_loss, dpo_rewards
from prefalign.objectives.exo import EXO, exo_pair_loss
from prefalign.objectives.f_divergence import FDivergence, f_divergence_score
from prefalign.objectives.hinge import Hinge, hinge_loss
from prefalign.objectives.ipo import IPO, ipo_loss
from prefalign.objectives.kto import KTO, kto_loss, kto_reference_point, kto_unpaired_loss
from prefalign.objectives.length_dpo import LDDPO, SigmoidNorm
from prefalign.objectives.nca import NCA, nca_pair_loss
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
from prefalign.objectives.reference_free import ReferenceFree
from prefalign.objectives.rewards import CorrectLabelReward, RewardFunction, RewardModelConfidence
from prefalign.objectives.robust_dpo import RobustDPO, robust_dpo_loss
from prefalign.objectives.rpo import RPO, rpo_loss
from prefalign.objectives.sft import SFT, sft_loss
from prefalign.objectives.simpo import SimPO, simpo_loss
from prefalign.objectives.sppo import SPPO, sppo_hard_loss
from prefalign.objectives.weighted_sum import WeightedSum
from prefalign.objectives.wpo import WPO

__all__ = [
    # interface
    "PairLogps",
    "ObjectiveOutput",
    "Objective",
    "validate_logps",
    "logratio_diff",
    "preference_metrics",
    "unpaired_metrics",
    # preference objectives
    "SFT",
    "DPO",
    "SigmoidNorm",
    "LDDPO",
    "RobustDPO",
    "IPO",
    "Hinge",
    "RPO",
    "SimPO",
    "KTO",
    "ORPO",
    "EXO",
    "NCA",
    "BCO",
    "SPPO",
    "AOT",
    "AOTPair",
    "APOZero",
    "APODown",
    "DiscoPOP",
    "CPO",
    # modifiers: wrap any (suitable) objective
    "FDivergence",
    "WPO",
    "WeightedSum",
    "ReferenceFree",
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
    "exo_pair_loss",
    "nca_pair_loss",
    "bco_pair_loss",
    "bco_unpaired_loss",
    "kto_unpaired_loss",
    "sppo_hard_loss",
    "aot_loss",
    "aot_pair_loss",
    "apo_zero_loss",
    "apo_down_loss",
    "discopop_loss",
    "cpo_loss",
    "f_divergence_score",
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
