import torch
from torch import nn

from prefalign.models.fast_layers import FewOutputsLinear, InputConv2d


class SeedCNN(nn.Module):
    """The seed-000 CNN: one 3x3 conv (1→64, padding 1), ReLU, and a linear head over all 64·28·28 features.

    Deliberately shallow: it is a linear classifier over one layer of learned local features, which is
    what makes its behaviour under DPO easy to read.
    """

    def __init__(self, channels: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.init_args = {
            "channels": channels,
            "num_classes": num_classes,
        }  # what a checkpoint needs to rebuild this backbone
        self.conv1 = InputConv2d(1, channels, kernel_size=3, padding=1)
        self.relu1 = nn.ReLU()
        self.flatten = nn.Flatten()
        self.fc = FewOutputsLinear(channels * 28 * 28, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.flatten(self.relu1(self.conv1(x))))
