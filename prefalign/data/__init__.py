"""Data: MNIST acquisition, corruptions, in-memory batching, preference mining and the DataModules."""

from prefalign.data.corruptions import Corruption, GaussianNoise, NoCorruption
from prefalign.data.datamodules import NoisyMNISTDataModule
from prefalign.data.diffusion_pairs import DiffusionPreferenceDataModule
from prefalign.data.preference_datamodule import PreferenceDataModule

__all__ = [
    "Corruption",
    "GaussianNoise",
    "NoCorruption",
    "NoisyMNISTDataModule",
    "PreferenceDataModule",
    "DiffusionPreferenceDataModule",
]
