"""Backbones: small image classifiers that map ``[B, 1, 28, 28]`` images in [0, 1] to ``[B, num_classes]`` logits,
the character-level TinyTransformer (``[B, T]`` ids to ``[B, T, vocab]`` logits) and the class-conditional
ConditionalUNet denoiser (``(x_t, t, y)`` to predicted noise), and HFCausalLM, a pretrained Hugging Face causal LM.

Every backbone returns raw logits; log-softmax is taken by the caller (in fp32) so that objectives see
log-probabilities and mixed precision never touches the normalisation.
"""

from prefalign.models.binary_cnn import BinaryCNN
from prefalign.models.hf import HFCausalLM  # transformers is imported only when one is built
from prefalign.models.hf_config import HFCausalLMFromConfig
from prefalign.models.lenet import LeNet
from prefalign.models.lora import LoRA
from prefalign.models.mlp import MLP
from prefalign.models.seed_cnn import SeedCNN
from prefalign.models.transformer import TinyTransformer
from prefalign.models.unet import ConditionalUNet

__all__ = [
    "SeedCNN",
    "MLP",
    "LeNet",
    "BinaryCNN",
    "TinyTransformer",
    "LoRA",
    "ConditionalUNet",
    "HFCausalLM",
    "HFCausalLMFromConfig",
    "first_conv",
]


def first_conv(model):
    """The first ``nn.Conv2d`` of a model, or None: its filters are what the filter plot shows."""
    import torch.nn as nn

    return next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
