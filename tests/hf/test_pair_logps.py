"""Paired batches the fast way (each pair's prompt run once, rows in length buckets) give the plain padded batch's
log-probs, DPO loss and gradients, up to float rounding; the packed layout and the buckets checked by hand."""

from __future__ import annotations

import pytest
import torch

from prefalign.families.hf import HFCausalLMFamily
from prefalign.models import HFCausalLM
from prefalign.models.hf_logps import _pack_pairs, bucket_rows, completion_token_logps, pair_completion_token_logps
from prefalign.objectives import DPO


def llama(attn: str = "sdpa"):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        vocab_size=50,
        tie_word_embeddings=False,
    )
    config._attn_implementation = attn
    return LlamaForCausalLM(config)


def pairs_batch(prompts, chosen, rejected):
    """TRL's collated layout: [chosen rows; rejected rows], right-padded with 0, completion mask after the prompt."""
    rows = [p + c for p, c in zip(prompts, chosen)] + [p + r for p, r in zip(prompts, rejected)]
    starts = [len(p) for p in prompts] * 2
    width = max(map(len, rows))
    ids = torch.tensor([r + [0] * (width - len(r)) for r in rows])
    col = torch.arange(width)
    lengths = torch.tensor([len(r) for r in rows]).unsqueeze(1)
    attention = (col < lengths).long()
    completion = ((col >= torch.tensor(starts).unsqueeze(1)) & (col < lengths)).long()
    return ids, attention, completion


# Three pairs of different prompt and completion lengths (random token ids below 50).
PROMPTS = [[5, 6, 7], [8, 9], [10, 11, 12, 13, 14]]
CHOSEN = [[20, 21, 22, 23], [24], [25, 26, 27]]
REJECTED = [[30], [31, 32, 33, 34, 35, 36], [37, 38]]


def test_packed_layout_by_hand():
    ids, attention, completion = pairs_batch(PROMPTS[:1], CHOSEN[:1], REJECTED[:1])
    packed = _pack_pairs(ids, attention, completion)
    # one row: prompt, chosen, rejected; the rejected token takes the position it has after the prompt
    assert packed["ids"].tolist() == [[5, 6, 7, 20, 21, 22, 23, 30]]
    assert packed["positions"].tolist() == [[0, 1, 2, 3, 4, 5, 6, 3]]
    mask = packed["mask"][0, 0].int().tolist()
    assert mask[7] == [1, 1, 1, 0, 0, 0, 0, 1]  # the rejected token sees the prompt and itself, not the chosen tokens
    assert mask[6] == [1, 1, 1, 1, 1, 1, 1, 0]  # the last chosen token: causal as in its own row
    # scored: chosen tokens predicted from columns 2..5, the rejected one from the prompt's last column (2)
    assert packed["score_cols"].tolist() == [2, 3, 4, 5, 2]
    assert packed["targets"].tolist() == [20, 21, 22, 23, 30]


def test_pairs_with_different_prompts_are_not_packed():
    ids, attention, completion = pairs_batch(PROMPTS[:2], CHOSEN[:2], REJECTED[:2])
    ids[2, 0] = 49  # the first pair's rejected row has another first prompt token
    assert _pack_pairs(ids, attention, completion) is None


def test_buckets_minimise_the_padded_tokens():
    assert bucket_rows([5, 9, 6, 10], 2) == [[0, 2], [1, 3]]  # 2 × 6 + 2 × 10 = 32 tokens (one bucket: 40)
    assert bucket_rows([5, 9, 6, 10], 1) == [[0, 2, 1, 3]]
    assert bucket_rows([4, 4, 4, 20], 2) == [[0, 1, 2], [3]]  # 3 × 4 + 20
    assert bucket_rows([3, 7], 5) == [[0], [1]]  # never more buckets than rows
    assert bucket_rows([], 2) == []


def _padded(groups: list[list[int]], lengths: list[int]) -> int:
    return sum(len(g) * max(lengths[i] for i in g) for g in groups)


def test_buckets_are_optimal_against_every_split():
    """Every split of the sorted rows into at most k runs, tried by brute force: none pads fewer tokens."""
    import itertools
    import random

    rng = random.Random(0)
    for _ in range(200):
        lengths = [rng.randint(1, 12) for _ in range(rng.randint(1, 9))]
        k = rng.randint(1, 4)
        groups = bucket_rows(lengths, k)
        assert sorted(i for g in groups for i in g) == list(range(len(lengths))) and len(groups) <= k
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        best = min(
            _padded([order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))], lengths)
            for m in range(min(k, len(order)))
            for cuts in itertools.combinations(range(1, len(order)), m)
        )
        assert _padded(groups, lengths) == best, (lengths, k, groups)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize(("share", "buckets"), [(True, 1), (True, 2), (False, 3), (True, 3)])
def test_same_logps_and_gradients_as_the_padded_batch(attn, share, buckets):
    model = llama(attn)
    ids, attention, completion = pairs_batch(PROMPTS, CHOSEN, REJECTED)
    expected = completion_token_logps(model, ids, attention, completion)
    (expected * torch.arange(1.0, expected.shape[1] + 1)).sum().backward()  # position-dependent weights
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    got = pair_completion_token_logps(model, ids, attention, completion, share, buckets, chunk_rows=5)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    assert (got[completion[:, 1:] == 0] == 0).all()
    (got * torch.arange(1.0, got.shape[1] + 1)).sum().backward()
    for name, grad in grads.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, atol=1e-5, rtol=1e-4)


def test_dpo_loss_and_gradients_of_the_family_unchanged(tiny_model):
    """The family's default (shared prompt, 2 buckets) against one padded forward per side, on the tiny Llama."""
    ids, attention, completion = pairs_batch(PROMPTS, CHOSEN, REJECTED)
    batch = {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}
    reference = HFCausalLM(str(tiny_model)).eval().requires_grad_(False)
    results = []
    for family in (HFCausalLMFamily(share_prompt=False, length_buckets=1), HFCausalLMFamily()):
        policy = HFCausalLM(str(tiny_model))
        with torch.no_grad():  # move the policy away from the reference so the loss is not log 2
            for p in policy.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
        out = DPO(beta=0.1)(family.pair_logps(policy, reference, batch))
        out.loss.backward()
        results.append((out.loss.detach(), {n: p.grad for n, p in policy.named_parameters()}))
    (plain_loss, plain_grads), (fast_loss, fast_grads) = results
    torch.testing.assert_close(fast_loss, plain_loss, atol=1e-6, rtol=1e-6)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, atol=1e-6, rtol=1e-4)


def test_sliding_windows_shorter_than_the_rows_keep_the_prompt_apart():
    from prefalign.models.hf_logps import supports_4d_mask

    model = llama()
    assert supports_4d_mask(model, 100)
    model.config.sliding_window = 8  # a window the rows fit in changes nothing; a shorter one would be overridden
    assert supports_4d_mask(model, 8) and not supports_4d_mask(model, 9)
    model.config._attn_implementation = "flash_attention_2"
    assert not supports_4d_mask(model, 8)


def test_gemma2_sliding_layers_and_soft_caps():
    """Gemma 2: eager attention with soft-capped scores, sliding-window layers (wider than the rows), capped logits."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=64,
        vocab_size=50,
        final_logit_softcapping=0.5,
        sliding_window=16,
    )
    model = Gemma2ForCausalLM(config)
    ids, attention, completion = pairs_batch(PROMPTS, CHOSEN, REJECTED)
    assert _pack_pairs(ids, attention, completion) is not None and ids.shape[1] <= 16
    expected = completion_token_logps(model, ids, attention, completion)
    expected.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    got = pair_completion_token_logps(model, ids, attention, completion, True, 2)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    got.sum().backward()
    for name, grad in grads.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, atol=1e-5, rtol=1e-4)
