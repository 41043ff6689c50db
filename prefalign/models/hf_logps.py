"""Log-probs of completion tokens from a Hugging Face causal LM without its ``[N, T, V]`` logits.

A causal LM's forward builds logits at every position, ``[N, T, V]``: with a 150k-token vocabulary, 16 sequences of
1024 tokens are 10 GB in fp32, before the log-softmax's copy and the gradient. Only completion positions matter to a
preference loss, so this module runs the model's backbone (``model.base_model``), keeps the hidden states at the
positions that predict a completion token, and projects them through the LM head in chunks of rows, each chunk under
activation checkpointing (its logits are rebuilt in the backward pass instead of kept): peak memory is one chunk's
logits. The logits are transformed as the model's own forward and TRL's fused LM head do (trl/trainer/utils.py
``add_fused_lm_head``): multiplied by the config's logit scale, then soft-capped, in fp32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

CHUNK_ROWS = 2048  # completion positions projected at a time: 2048 x 150k fp32 logits = 1.2 GB


def logit_transform(model: nn.Module) -> tuple[float, float | None]:
    """(logit scale, final soft-cap or None) from the model's text config, resolved as TRL 1.16 resolves them."""
    config = model.config.get_text_config()
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    if scale is None:
        scale = getattr(config, "output_multiplier", None)
    if scale is None:
        scale = getattr(config, "lm_head_multiplier", None)
    if scale is None and getattr(config, "logits_scaling", None) is not None:
        scale = config.logits_scaling if config.model_type == "hyperclovax" else 1 / config.logits_scaling
    return (1.0 if scale is None else float(scale)), softcap


def _chunk_logps(
    hidden: Tensor,
    targets: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    scale: float,
    softcap: float | None,
    temperature: float = 1.0,
) -> Tensor:
    logits = F.linear(hidden, weight, bias).float() * scale
    if softcap is not None:
        logits = softcap * torch.tanh(logits / softcap)
    if temperature != 1.0:  # the sampling distribution of a tempered rollout (TRL's GRPO scores it the same way)
        logits = logits / temperature
    return -F.cross_entropy(logits, targets, reduction="none")


def completion_token_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    chunk_rows: int = CHUNK_ROWS,
    temperature: float = 1.0,
    position_ids: Tensor | None = None,
) -> Tensor:
    """``[N, T-1]`` fp32: log p(input_ids[:, t+1] | input_ids[:, :t+1]) where ``completion_mask[:, t+1]``, else 0.

    ``model`` is a transformers ``*ForCausalLM`` (a peft model's base, adapters included). ``temperature`` divides
    the (scaled, soft-capped) logits; ``position_ids`` are passed to the model (left-padded prompts: see the HF family)."""
    extra = {} if position_ids is None else {"position_ids": position_ids}
    hidden = model.base_model(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False, **extra
    ).last_hidden_state[:, :-1]
    mask = completion_mask[:, 1:].bool()
    head = model.get_output_embeddings()
    rows, targets = hidden[mask].to(head.weight.device), input_ids[:, 1:][mask].to(head.weight.device)
    scale, softcap = logit_transform(model)
    grad = torch.is_grad_enabled()
    pieces = []
    for start in range(0, len(rows), chunk_rows):  # a few chunks per batch, not one step per sample
        args = (
            rows[start : start + chunk_rows],
            targets[start : start + chunk_rows],
            head.weight,
            head.bias,
            scale,
            softcap,
            temperature,
        )
        pieces.append(checkpoint(_chunk_logps, *args, use_reentrant=False) if grad else _chunk_logps(*args))
    values = torch.cat(pieces) if pieces else rows.new_zeros(0, dtype=torch.float32)
    # masked_scatter keeps the result connected to the graph even when a batch has no completion token
    return torch.zeros(mask.shape, dtype=torch.float32, device=values.device).masked_scatter(mask, values)
