"""Data: MNIST acquisition, corruptions, in-memory batching, preference mining and the DataModules."""

from prefalign.data.corruptions import Corruption, GaussianNoise, NoCorruption
from prefalign.data.datamodules import NoisyMNISTDataModule, PreferenceDataModule
from prefalign.data.diffusion_pairs import DiffusionPreferenceDataModule

__all__ = ["Corruption", "GaussianNoise", "NoCorruption", "NoisyMNISTDataModule", "PreferenceDataModule", "DiffusionPreferenceDataModule"]
