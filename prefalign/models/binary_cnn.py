import torch
from torch import nn
from torch.nn import functional as F


class BinaryCNN(nn.Module):
    """The seed-004 tiny CNN for two-digit tasks: 8 filters 3x3 (padding 1), max-pool 7x7 stride 7, Linear 128→2.

    The notebook ends in log_softmax; here the head returns logits like every other backbone (log-softmax
    is applied by the caller), which gives the same predictions and losses.
    """

    def __init__(self, filters: int = 8, num_classes: int = 2) -> None:
        super().__init__()
        self.init_args = {
            "filters": filters,
            "num_classes": num_classes,
        }  # what a checkpoint needs to rebuild this backbone
        self.conv1 = nn.Conv2d(1, filters, kernel_size=3, padding=1)
        self.fc = nn.Linear(filters * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(self.conv1(x), kernel_size=7, stride=7)
        return self.fc(torch.flatten(x, 1))
