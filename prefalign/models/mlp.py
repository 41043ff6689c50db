import torch
from torch import nn


class MLP(nn.Module):
    """The seed-003 MLP (784→1024→2048→256→10, ReLU, dropout 0.05 on the logits as in the notebook)."""

    def __init__(
        self, hidden: tuple[int, ...] = (1024, 2048, 256), num_classes: int = 10, dropout: float = 0.05
    ) -> None:
        super().__init__()
        self.init_args = {
            "hidden": list(hidden),
            "num_classes": num_classes,
            "dropout": dropout,
        }  # what a checkpoint needs to rebuild this backbone
        layers: list[nn.Module] = [nn.Flatten()]
        width = 28 * 28
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.mlp = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.mlp(x))
