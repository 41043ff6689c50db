"""Mining preference pairs from a reference model's predictions.

Each strategy maps reference log-probabilities ``[N, C]`` and true labels ``[N]`` to the rows kept and the
(chosen, rejected) labels of each pair. Chosen is always the true digit.

* ``mistakes`` — the seed-000 recipe: only images the reference gets wrong; rejected = its prediction.
* ``hard_negative`` — every image; rejected = the reference's most likely *wrong* class.
* ``random_negative`` — every image; rejected = a uniformly random wrong class (an ablation).
"""

from __future__ import annotations

from typing import Literal

import torch

from prefalign.data.batches import chunked_forward

Strategy = Literal["mistakes", "hard_negative", "random_negative"]
STRATEGIES: tuple[str, ...] = ("mistakes", "hard_negative", "random_negative")


def mine_pairs(
    reference_logps: torch.Tensor, labels: torch.Tensor, strategy: Strategy, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(rows, chosen, rejected)``: indices into the inputs and the pair labels, all int64."""
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown mining strategy {strategy!r}; choose one of {STRATEGIES}")
    labels = labels.to(torch.int64)
    if strategy == "mistakes":
        predicted = reference_logps.argmax(dim=1)
        rows = torch.nonzero(predicted != labels).squeeze(1)
        return rows, labels[rows], predicted[rows]
    rows = torch.arange(len(labels), device=labels.device)
    if strategy == "hard_negative":
        masked = reference_logps.masked_fill(
            torch.nn.functional.one_hot(labels, reference_logps.shape[1]).bool(), float("-inf")
        )
        return rows, labels, masked.argmax(dim=1)
    # random_negative: an offset in [1, C-1] added modulo C is uniform over the wrong classes.
    g = torch.Generator().manual_seed(seed)
    offset = torch.randint(1, reference_logps.shape[1], (len(labels),), generator=g).to(labels.device)
    return rows, labels, (labels + offset) % reference_logps.shape[1]


@torch.no_grad()
def reference_log_probs(model: torch.nn.Module, images: torch.Tensor, batch_size: int = 2048) -> torch.Tensor:
    """Full log-softmax ``[N, C]`` of a frozen model over ``images``, in fp32, in slices of ``batch_size``."""
    model.eval()
    if len(images) == 0:
        return torch.empty(0)
    # chunked_forward: at most CPU_FORWARD_CHUNK images per call on CPU, where larger chunks fall out of cache.
    return chunked_forward(lambda x: torch.log_softmax(model(x).float(), dim=1), images, batch_size)
