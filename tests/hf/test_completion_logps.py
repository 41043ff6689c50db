"""Completion log-probs without the [N, T, V] logits equal the model's own logits' log-softmax, gradients included,
for a plain Llama (in several chunks) and for a Gemma 2 whose forward soft-caps its logits."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from prefalign.models.hf_logps import completion_token_logps, logit_transform


def from_logits(model, ids, attention, completion):
    logp = F.log_softmax(model(input_ids=ids, attention_mask=attention).logits[:, :-1].float(), -1)
    return logp.gather(-1, ids[:, 1:, None]).squeeze(-1) * completion[:, 1:]


def batch(vocab):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (3, 9), generator=g)
    attention = (torch.arange(9) < torch.tensor([[9], [7], [5]])).long()
    completion = attention.clone()
    completion[:, :3] = 0
    return ids, attention, completion


def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(
        LlamaConfig(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            intermediate_size=64,
            vocab_size=50,
            tie_word_embeddings=False,
        )
    )


def gemma2():
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
    )  # a small cap: it bites
    return Gemma2ForCausalLM(config)


@pytest.mark.parametrize("build", [llama, gemma2], ids=["llama", "gemma2_softcap"])
def test_equal_to_the_forward_with_gradients(build):
    model = build()
    ids, attention, completion = batch(50)
    expected = from_logits(model, ids, attention, completion)
    expected.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    got = completion_token_logps(model, ids, attention, completion, chunk_rows=4)  # 4 chunks of completion positions
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    got.sum().backward()
    for name, grad in grads.items():
        torch.testing.assert_close(model.get_parameter(name).grad, grad, atol=1e-5, rtol=1e-4)


def test_logit_transform_reads_the_scale_and_the_cap():
    assert logit_transform(gemma2()) == (1.0, 0.5)
    assert logit_transform(llama()) == (1.0, None)
