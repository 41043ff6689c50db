"""prefalign: preference alignment (SFT, the DPO family, PPO-lite) on models small enough to understand."""

__version__ = "0.1.0"
