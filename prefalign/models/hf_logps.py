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
    return _project(model, rows, targets, mask, chunk_rows, temperature)


def _project(
    model: nn.Module, rows: Tensor, targets: Tensor, mask: Tensor, chunk_rows: int, temperature: float = 1.0
) -> Tensor:
    """Log-probs of ``targets`` from the hidden states ``rows`` ``[M, H]`` (the LM head in checkpointed chunks),
    scattered into a zero ``[N, T-1]`` tensor where ``mask`` (row-major order of ``rows``)."""
    head = model.get_output_embeddings()
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
    return torch.zeros(mask.shape, dtype=torch.float32, device=values.device).masked_scatter(
        mask.to(values.device), values
    )


# ---------------------------------------------------------------------------------------------- paired batches, faster
#
# A DPO batch holds each pair as two rows, prompt + chosen and prompt + rejected, right-padded to the batch's longest
# row (TRL's collator). On the 20M-parameter benchmark a third of the real tokens are the prompt, run twice, and a
# quarter of the computed tokens are padding. ``pair_completion_token_logps`` computes the same log-probs with less
# work, without changing what is computed for any scored token:
#
# * shared prompt: each pair is one row ``prompt, chosen, rejected``; the rejected tokens attend to the prompt and to
#   each other but not to the chosen ones (a 4D attention mask) and take the positions they have in ``prompt +
#   rejected`` (``position_ids``). Every scored token sees exactly the context and positions it sees in its own row,
#   so its log-prob is the plain path's up to float rounding; the prompt runs once per pair instead of twice.
# * length buckets: the packed rows, sorted by length, run as a few forwards, each padded only to its own longest
#   row. The outputs are gathered back to the plain layout and the loss built once, so one backward gives the
#   gradient of the padded batch (not an accumulation of partial losses: the loss and its gradient are unchanged).


def _pack_pairs(input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor) -> dict[str, Tensor] | None:
    """The shared-prompt layout of ``[chosen; rejected]`` rows, or None where it does not apply.

    It applies when every row is ``prompt, completion, padding`` (right-padded, completion contiguous after a
    non-empty prompt) and both rows of a pair hold the same prompt tokens: TRL's layout with ``keep_start``
    truncation. (``keep_end`` truncation can cut a pair's two prompts differently; such batches take the plain path.)"""
    n = len(input_ids) // 2
    if n == 0 or len(input_ids) != 2 * n:
        return None
    width = input_ids.shape[1]
    col = torch.arange(width, device=input_ids.device)
    lengths = attention_mask.sum(-1)
    completion = completion_mask.bool()
    prompt = lengths - completion.sum(-1)
    right_padded = attention_mask.bool() == (col < lengths.unsqueeze(1))
    contiguous = completion == ((col >= prompt.unsqueeze(1)) & (col < lengths.unsqueeze(1)))
    prompt_col = col < prompt[:n].unsqueeze(1)
    same_prompt = (input_ids[:n] == input_ids[n:]) | ~prompt_col
    ok = (
        right_padded.all()
        & contiguous.all()
        & (prompt[:n] == prompt[n:]).all()
        & (prompt >= 1).all()
        & same_prompt.all()
    )
    if not bool(ok):  # one host sync per batch (the packed width is needed on the host anyway)
        return None
    p, c, r = prompt[:n], lengths[:n] - prompt[:n], lengths[n:] - prompt[n:]
    packed_len = p + c + r
    w = int(packed_len.max())
    k = torch.arange(w, device=input_ids.device)
    first = k < (p + c).unsqueeze(1)  # prompt and chosen: the chosen row's own columns
    source_row = torch.where(
        first, torch.arange(n, device=k.device).unsqueeze(1), torch.arange(n, 2 * n, device=k.device).unsqueeze(1)
    )
    # rejected token j of the pair sits at packed column p + c + j and at column p + j of its own row
    source_col = torch.where(first, k, k - c.unsqueeze(1)).clamp(0, width - 1)
    ids = input_ids[source_row, source_col]
    in_chosen = (k >= p.unsqueeze(1)) & first
    in_rejected = ~first & (k < packed_len.unsqueeze(1))
    causal = k.unsqueeze(0) <= k.unsqueeze(1)  # [query, key]
    # Padding sits after every real token, so the causal mask already keeps it out of every real token's context;
    # padding queries attend causally too (no all-masked row, which would make SDPA produce NaN).
    mask = causal & ~(in_rejected.unsqueeze(2) & in_chosen.unsqueeze(1))
    # Scored positions in the plain layout (hidden column j predicts token j + 1), mapped to the packed rows: a
    # chosen row's columns are unchanged; a rejected row's completion columns move right by the chosen length,
    # except the prompt's last column, which predicts the first token of both completions.
    scored = completion[:, 1:]
    rows, cols = scored.nonzero(as_tuple=True)
    pair = rows % n
    shift = torch.where((rows >= n) & (cols >= p[pair]), c[pair], torch.zeros_like(cols))
    return {
        "ids": ids,
        "positions": source_col,
        "mask": mask.unsqueeze(1),
        "lengths": packed_len,
        "score_rows": pair,
        "score_cols": cols + shift,
        "targets": input_ids[:, 1:][scored],
    }


def _plain_layout(input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor) -> dict[str, Tensor]:
    """The rows as they are (for :func:`pair_completion_token_logps`'s length buckets when the prompt is not shared)."""
    scored = completion_mask[:, 1:].bool()
    rows, cols = scored.nonzero(as_tuple=True)
    columns = torch.arange(1, input_ids.shape[1] + 1, device=input_ids.device)
    return {
        "ids": input_ids,
        "attention": attention_mask,
        # up to the last attended column: the row's real length when right-padded, the full width when left-padded
        "lengths": (attention_mask.bool() * columns).amax(-1),
        "score_rows": rows,
        "score_cols": cols,
        "targets": input_ids[:, 1:][scored],
    }


def bucket_rows(lengths: list[int], buckets: int) -> list[list[int]]:
    """Rows grouped into at most ``buckets`` groups of consecutive lengths (sorted), the split that minimises the
    padded tokens ``Σ size × longest``: dynamic programming over the sorted lengths, each group count one tensor
    operation over all (start, end) pairs, so a batch of hundreds of rows costs no Python loop over them."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n, k = len(order), max(1, min(buckets, len(order)))
    longest = torch.tensor([0] + [lengths[i] for i in order], dtype=torch.int64)  # longest[e]: of the first e rows
    index = torch.arange(n + 1)
    start, end = index[:, None], index[None, :]
    unreachable = torch.iinfo(torch.int64).max // 2
    cost = torch.full((n + 1,), unreachable, dtype=torch.int64)  # fewest padded tokens covering the first e rows
    cost[0] = 0
    cuts = []  # cuts[g - 1][e]: where the last of g groups covering the first e rows starts
    for _ in range(k):
        value = cost[:, None] + (end - start) * longest[None, :]  # the last group holds rows start..end-1
        value = torch.where((start < end) & (cost[:, None] < unreachable), value, unreachable)
        cost, cut = value.min(0)  # ties: the first (smallest) start, as a strict "<" scan would keep
        cuts.append(cut)
    groups, e = [], n
    for cut in reversed(cuts):
        s = int(cut[e])
        if e > s:
            groups.append(order[s:e])
        e = s
    return groups[::-1]


def _bucketed_hidden(base: nn.Module, layout: dict[str, Tensor], buckets: int) -> Tensor:
    """The last hidden states at the layout's scored positions ``[M, H]`` (in the plain layout's order), the rows run
    in length buckets."""
    lengths = layout["lengths"].tolist()
    groups = bucket_rows(lengths, buckets)
    device = layout["ids"].device
    row_group = torch.empty(len(lengths), dtype=torch.long, device=device)
    row_slot = torch.empty_like(row_group)
    indices = [torch.tensor(rows, device=device) for rows in groups]
    for g, index in enumerate(indices):
        row_group[index] = g
        row_slot[index] = torch.arange(len(index), device=device)
    pieces, order = [], []
    for g, (rows, index) in enumerate(zip(groups, indices)):
        w = max(lengths[i] for i in rows)
        if "mask" in layout:
            kwargs = {
                "attention_mask": layout["mask"][index][:, :, :w, :w],
                "position_ids": layout["positions"][index, :w],
            }
        else:
            kwargs = {"attention_mask": layout["attention"][index, :w]}
        hidden = base(input_ids=layout["ids"][index, :w], use_cache=False, **kwargs).last_hidden_state
        chosen = (row_group[layout["score_rows"]] == g).nonzero(as_tuple=True)[0]
        pieces.append(hidden[row_slot[layout["score_rows"][chosen]], layout["score_cols"][chosen]])
        order.append(chosen)
    # back to the plain layout's order (row by row, column by column) with one gather
    inverse = torch.empty_like(layout["score_rows"])
    taken = torch.cat(order)
    inverse[taken] = torch.arange(len(taken), device=device)
    return torch.cat(pieces)[inverse]


def pair_completion_token_logps(
    model: nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    share_prompt: bool = True,
    buckets: int = 2,
    chunk_rows: int = CHUNK_ROWS,
) -> Tensor:
    """:func:`completion_token_logps` of a paired batch (``[chosen; rejected]`` rows, TRL's layout), the same numbers
    up to float rounding with less work: each pair's prompt run once (``share_prompt``, where the layout allows it)
    and the rows run in ``buckets`` forwards of similar lengths (see the comment above). Needs an attention
    implementation that takes a 4D mask (``sdpa``, ``eager``) and a model without sliding-window layers for the
    shared prompt; otherwise only the buckets apply."""
    if len(input_ids) == 0:
        return completion_token_logps(model, input_ids, attention_mask, completion_mask, chunk_rows)
    layout = (
        _pack_pairs(input_ids, attention_mask, completion_mask)
        if share_prompt and supports_4d_mask(model, input_ids.shape[1])
        else None
    )
    if layout is None:
        layout = _plain_layout(input_ids, attention_mask, completion_mask)
    if "mask" in layout and _attn_implementation(model) == "eager":
        # eager attention adds the mask to the scores: 0 where allowed, the dtype's minimum elsewhere
        dtype = next(model.parameters()).dtype
        layout["mask"] = torch.zeros(layout["mask"].shape, dtype=dtype, device=input_ids.device).masked_fill(
            ~layout["mask"], torch.finfo(dtype).min
        )
    hidden = _bucketed_hidden(model.base_model, layout, buckets)
    head = model.get_output_embeddings()
    return _project(
        model,
        hidden.to(head.weight.device),
        layout["targets"].to(head.weight.device),
        completion_mask[:, 1:].bool(),
        chunk_rows,
    )


def supports_4d_mask(model: nn.Module, width: int) -> bool:
    """Whether a custom 4D mask gives rows of up to ``width`` tokens their own attention in every layer: ``sdpa`` or
    ``eager`` attention (flash attention takes no 4D mask), no chunked attention, and sliding windows (which a custom
    mask replaces) no shorter than the rows, so that they cut no token's context in the plain layout either."""
    config = model.config.get_text_config()
    if _attn_implementation(model) not in ("sdpa", "eager") or getattr(config, "attention_chunk_size", None):
        return False
    window = getattr(config, "sliding_window", None)
    return window is None or width <= window


def _attn_implementation(model: nn.Module) -> str | None:
    return getattr(model.config.get_text_config(), "_attn_implementation", None)
