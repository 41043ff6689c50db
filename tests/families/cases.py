"""Every registered model family, as a small case the shared tests can drive: add one entry per new family."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from prefalign.families.base import ModelFamily
from prefalign.objectives import RewardFunction


@dataclass
class FamilyCase:
    family: ModelFamily
    backbone: nn.Module  # a tiny model of the family
    pairs: dict[str, torch.Tensor]  # a preference batch as the family's data module makes it
    prompts: dict[str, torch.Tensor]  # an RL batch (families with "sampling")
    reward: RewardFunction | None


def classifier_case() -> FamilyCase:
    from prefalign.families.classifier import ClassifierFamily
    from prefalign.models import SeedCNN
    from prefalign.objectives import CorrectLabelReward

    torch.manual_seed(0)
    x = torch.rand(6, 1, 28, 28)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    return FamilyCase(
        ClassifierFamily(num_classes=10),
        SeedCNN(channels=2),
        {"x": x, "chosen": y, "rejected": (y + 3) % 10},
        {"x": x, "y": y},
        CorrectLabelReward(),
    )


def toy_case() -> FamilyCase:
    from tests.families.toy import ToyFamily, ToyReward, ToySeqModel, right_responses

    torch.manual_seed(0)
    prompts = torch.arange(6) % 8
    chosen = right_responses(prompts, 8)
    rejected = torch.stack([(prompts + 3) % 8, (prompts + 4) % 8], dim=1)
    mask = torch.ones_like(chosen, dtype=torch.bool)
    mask_r = mask.clone()
    mask_r[0, 1] = False  # a shorter rejected response: padding must be masked out
    pairs = {"prompt": prompts, "chosen": chosen, "chosen_mask": mask, "rejected": rejected, "rejected_mask": mask_r}
    return FamilyCase(ToyFamily(), ToySeqModel(8), pairs, {"prompt": prompts}, ToyReward(8))


class _CountReward(RewardFunction):
    """Test reward for text: how many sampled characters are the vowel 'e'."""

    def __init__(self, e_id: int) -> None:
        super().__init__()
        self.e_id = e_id

    def forward(self, rollout):
        return ((rollout.responses == self.e_id) & rollout.mask).float().sum(-1)


def language_case() -> FamilyCase:
    from prefalign.data.text import CharTokenizer
    from prefalign.families.language import LanguageFamily
    from prefalign.models import TinyTransformer

    torch.manual_seed(0)
    tok = CharTokenizer("abcde .")
    model = TinyTransformer(vocab_size=12, d_model=16, n_heads=2, n_layers=1, d_ff=32, block_size=16)
    model.vocab.copy_(tok.to_codes(12))
    family = LanguageFamily(max_new_tokens=4)
    family.configure(tok, 16)
    prompts = torch.stack([tok.encode("abc"), tok.encode("de "), tok.encode("a.b")])
    chosen = torch.stack([tok.encode("dee"), tok.encode("aab"), tok.encode("c.d")])
    rejected = torch.stack([tok.encode("aaa"), tok.encode("bb "), tok.encode("...")])
    mask_r = torch.ones_like(rejected, dtype=torch.bool)
    mask_r[1, 2] = False  # a shorter rejected response: padding must be masked out
    pairs = {
        "prompt": prompts,
        "chosen": chosen,
        "chosen_mask": torch.ones_like(chosen, dtype=torch.bool),
        "rejected": rejected,
        "rejected_mask": mask_r,
    }
    return FamilyCase(family, model, pairs, {"prompt": prompts}, _CountReward(tok.index["e"]))


def denoiser_case() -> FamilyCase:
    from prefalign.families.denoiser import DenoiserFamily
    from prefalign.models import ConditionalUNet

    torch.manual_seed(0)
    model = ConditionalUNet(channels=(4, 8), time_dim=8, groups=2)
    torch.nn.init.normal_(
        model.conv_out.weight, std=0.1
    )  # past the zero initialisation: a denoiser that predicts something
    images = torch.rand(6, 1, 28, 28)
    y = torch.tensor([1, 2, 3])
    pairs = {"chosen": images[:3], "rejected": images[3:], "y": y}
    return FamilyCase(DenoiserFamily(num_timesteps=20), model, pairs, {"x": images[:3], "y": y}, None)


def hf_case() -> FamilyCase:
    """A tiny local Llama (tests/hf/tiny.py) on a TRL-layout batch: 3 pairs with prompts and completions of different
    lengths, right-padded, so the masks must exclude prompt and padding."""
    import tempfile
    from pathlib import Path

    import pytest

    pytest.importorskip("transformers")
    from prefalign.families.hf import HFCausalLMFamily
    from prefalign.models import HFCausalLM
    from tests.hf.tiny import make_model_dir

    folder = make_model_dir(Path(tempfile.mkdtemp(prefix="prefalign-hf-case-")))
    model = HFCausalLM(str(folder))
    torch.manual_seed(0)
    lengths = [(2, 3), (4, 1), (1, 5), (3, 3), (2, 2), (1, 4)]  # (prompt, completion): chosen rows, then rejected rows
    width = max(p + c for p, c in lengths)
    ids = torch.randint(6, model.config.vocab_size, (len(lengths), width))
    attention = torch.zeros_like(ids)
    completion = torch.zeros_like(ids)
    for i, (p, c) in enumerate(lengths):
        attention[i, : p + c] = 1
        completion[i, p : p + c] = 1
    ids[attention == 0] = 3  # the pad id
    pairs = {"input_ids": ids, "attention_mask": attention, "completion_mask": completion}
    # Prompts left-padded, as TRLPromptDataModule batches them (lengths 3, 1, 2).
    prompt_mask = torch.tensor([[1, 1, 1], [0, 0, 1], [0, 1, 1]])
    prompt_ids = torch.randint(6, model.config.vocab_size, (3, 3)).masked_fill(prompt_mask == 0, 3)
    prompts = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "row": torch.arange(3)}
    return FamilyCase(HFCausalLMFamily(max_new_tokens=4), model, pairs, prompts, _CountReward(e_id=10))


FAMILY_CASES: dict[str, Callable[[], FamilyCase]] = {
    "classifier": classifier_case,
    "toy_sequence": toy_case,
    "language": language_case,
    "denoiser": denoiser_case,
    "hf": hf_case,
}
