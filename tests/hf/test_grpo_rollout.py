"""HF rollouts for PPO-lite (TRL's GRPO): generate, stop at a stop token, mask after it, score exactly as training does."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from prefalign.families.hf import HFCausalLMFamily
from prefalign.families.hf.rollout import completion_metrics, mask_after_stop
from prefalign.models import HFCausalLM
from prefalign.objectives import PPOLite
from tests.hf.tiny import make_model_dir


@pytest.fixture(scope="module")
def many_stops_model(tmp_path_factory):
    """The tiny Llama whose generation config lists 40 of its 120 ids as EOS (as a chat model lists an end-of-turn
    id beside EOS): completions stop after a few tokens at varied places, some never (truncated)."""
    folder = make_model_dir(tmp_path_factory.mktemp("many_stops"))
    config = json.loads((folder / "generation_config.json").read_text())
    config["eos_token_id"] = [2, *range(60, 99)]
    (folder / "generation_config.json").write_text(json.dumps(config))
    return folder


def prompt_batch(model: HFCausalLM, texts: list[str]) -> dict[str, torch.Tensor]:
    """Left-padded prompts, as TRLPromptDataModule batches them."""
    tok = model.load_tokenizer()
    rows = [tok(text=t)["input_ids"] for t in texts]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tok.pad_token_id)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r)
        mask[i, width - len(r) :] = 1
    return {"prompt_ids": ids, "prompt_mask": mask, "row": torch.arange(len(rows))}


def test_mask_keeps_the_first_stop_token_and_nothing_after_it():
    ids = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [9, 3, 3, 3], [2, 4, 4, 4]])
    mask = mask_after_stop(ids, [2, 9])
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0]]
    metrics, truncated = completion_metrics(ids, mask, [2, 9, 3])
    assert truncated.tolist() == [False, True, False, False]
    assert metrics["completions/mean_length"] == 2 and metrics["completions/clipped_ratio"] == 0.25
    assert metrics["completions/max_terminated_length"] == 2 and metrics["completions/min_length"] == 1


def test_generation_stops_at_any_eos_id_and_masks_after_it(many_stops_model):
    policy = HFCausalLM(str(many_stops_model))
    family = HFCausalLMFamily(max_new_tokens=8)
    batch = prompt_batch(policy, ["the cat sat on", "birds", "fish swim fast in blue"])
    torch.manual_seed(0)
    rollout = family.rollout(policy, batch, k=6)
    b, k, c = rollout.responses.shape
    assert (b, k) == (3, 6) and c <= 8
    stops = torch.tensor([2, *range(60, 99)])
    is_stop = torch.isin(rollout.responses, stops) & rollout.mask
    lengths = rollout.mask.sum(-1)
    # Every masked-in run is a prefix, ending at its only stop token or at max_new_tokens.
    assert torch.equal(rollout.mask, torch.arange(c) < lengths.unsqueeze(-1))
    assert (is_stop.sum(-1) <= 1).all()
    last = rollout.responses.gather(-1, (lengths - 1).unsqueeze(-1)).squeeze(-1)
    stopped = torch.isin(last, stops)
    assert torch.equal(stopped | (lengths == 8), torch.ones_like(stopped))
    assert stopped.any() and (~stopped).any() and len(set(lengths.flatten().tolist())) > 2  # varied, as promised
    assert (rollout.responses[~rollout.mask] == policy.load_tokenizer().pad_token_id).all()
    assert torch.equal(rollout.old_logps == 0, ~rollout.mask)
    assert rollout.metrics["completions/clipped_ratio"] == (~stopped).float().mean()


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_old_logps_are_the_training_forward_so_the_first_ratio_is_one(tiny_model, temperature):
    policy = HFCausalLM(str(tiny_model))
    family = HFCausalLMFamily(max_new_tokens=6, temperature=temperature)
    batch = prompt_batch(policy, ["the cat sat on a", "today", "blue water where"])
    torch.manual_seed(1)
    rollout = family.rollout(policy, batch, k=4)  # under no_grad, as ppo_step runs it
    new = family.response_logps(policy, rollout)  # with gradients, as the update runs it
    assert new.tokens.requires_grad
    assert torch.equal(new.tokens.detach(), rollout.old_logps)
    objective = PPOLite(k=4, ppo_epochs=1, kl_coef=0.0, loss_type="dapo")
    out = objective.loss(new.tokens, rollout.old_logps, torch.randn(3, 4), rollout.mask)
    assert out.metrics["ppo/clip_fraction"] == 0
    out.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in policy.parameters() if p.grad is not None)
    # By hand: each row without its left padding, one forward, log-softmax of logits / temperature.
    tok_rows = batch["prompt_ids"].repeat_interleave(4, 0)
    pmask = batch["prompt_mask"].repeat_interleave(4, 0).bool()
    responses, mask = rollout.responses.view(12, -1), rollout.mask.view(12, -1)
    for i in (0, 5, 11):
        seq = torch.cat([tok_rows[i][pmask[i]], responses[i][mask[i]]])
        with torch.no_grad():
            logp = F.log_softmax(policy(seq[None])[0].float() / temperature, -1)
        p = int(pmask[i].sum())
        expected = logp[p - 1 : len(seq) - 1].gather(-1, seq[p:, None]).squeeze(-1)
        torch.testing.assert_close(rollout.old_logps.view(12, -1)[i][mask[i]], expected, atol=1e-5, rtol=1e-5)
