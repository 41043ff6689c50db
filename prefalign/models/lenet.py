import torch
from torch import nn


class LeNet(nn.Module):
    """A LeNet-5-style CNN: two conv+pool stages (6 and 16 filters, 5x5) and a 120-84 MLP head."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.init_args = {"num_classes": num_classes}  # what a checkpoint needs to rebuild this backbone
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))
