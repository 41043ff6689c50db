"""Lightning strategies prefalign adds: FSDP2 for models that do not fit on one device."""

from prefalign.strategies.fsdp2 import FSDP2Strategy
from prefalign.strategies.sharding import shards_parameters

__all__ = ["FSDP2Strategy", "shards_parameters"]
