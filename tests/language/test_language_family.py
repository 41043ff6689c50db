"""The language family: masked sequence log-probs and exact KL against hand computation, seeded batched sampling,
and a pretraining run through the CLI on synthetic text."""

import json
import math

import pytest
import torch
from torch import nn

from prefalign.cli import main
from prefalign.data.text import CharTokenizer
from prefalign.families.language import LanguageFamily
from prefalign.models.generation import sample
from tests.conftest import CONFIGS

TOK = CharTokenizer("abc")


class Bigram(nn.Module):
    """logits[t] = table[ids[t]]: the next character depends on the current one only, so log-probs are by hand."""

    def __init__(self, table, block_size=8):
        super().__init__()
        self.table = torch.tensor(table, dtype=torch.float32)
        self.block_size = block_size

    def forward(self, ids):
        return self.table[ids]


def logp(table, current, nxt):  # log softmax of one row, from the definition
    row = table[current]
    return row[nxt] - math.log(sum(math.exp(v) for v in row))


POLICY = [[0.0, 1.0, 2.0], [1.0, 0.0, 0.0], [0.6, 0.5, -1.0]]
REFERENCE = [[0.0, 0.0, 0.0], [2.0, 0.0, 1.0], [0.0, 1.0, 0.0]]


def family():
    f = LanguageFamily()
    f.configure(TOK, 8)
    return f


def test_masked_sequence_log_probs_sum_and_mean_by_hand():
    # prompt "ab", chosen "ca" (both tokens), rejected "bc" with its last token padding
    batch = {
        "prompt": TOK.encode("ab")[None],
        "chosen": TOK.encode("ca")[None],
        "chosen_mask": torch.tensor([[True, True]]),
        "rejected": TOK.encode("bc")[None],
        "rejected_mask": torch.tensor([[True, False]]),
    }
    a, b, c = 0, 1, 2
    chosen = logp(POLICY, b, c) + logp(POLICY, c, a)  # b -> c, then c -> a
    rejected = logp(POLICY, b, b)  # b -> b; the padded c is not counted
    lp = family().pair_logps(Bigram(POLICY), Bigram(REFERENCE), batch)
    assert lp.policy_chosen.item() == pytest.approx(chosen, rel=1e-6) and lp.policy_rejected.item() == pytest.approx(
        rejected, rel=1e-6
    )
    assert lp.reference_chosen.item() == pytest.approx(logp(REFERENCE, b, c) + logp(REFERENCE, c, a), rel=1e-6)
    mean = family().pair_logps(Bigram(POLICY), None, batch, length_normalized=True)
    assert mean.policy_chosen.item() == pytest.approx(
        chosen / 2, rel=1e-6
    ) and mean.policy_rejected.item() == pytest.approx(rejected, rel=1e-6)


def test_exact_kl_is_summed_over_the_vocabulary_and_the_response():
    batch = {
        "prompt": TOK.encode("a")[None],
        "chosen": TOK.encode("bc")[None],
        "chosen_mask": torch.tensor([[True, True]]),
    }

    def kl(current):
        p = [math.exp(logp(POLICY, current, j)) for j in range(3)]
        return sum(p[j] * (logp(POLICY, current, j) - logp(REFERENCE, current, j)) for j in range(3))

    lp = family().pair_logps(Bigram(POLICY), Bigram(REFERENCE), batch)
    assert lp.kl.item() == pytest.approx(kl(0) + kl(1), rel=1e-5)  # positions predicting after 'a' and after 'b'


def test_pretraining_windows_are_one_response_each():
    window = TOK.encode("abca")[None]
    lp = family().pair_logps(Bigram(POLICY), None, {"tokens": window}, length_normalized=True)
    expected = (logp(POLICY, 0, 1) + logp(POLICY, 1, 2) + logp(POLICY, 2, 0)) / 3
    assert lp.policy_chosen.item() == pytest.approx(expected, rel=1e-6) and lp.policy_rejected is None


def test_wpo_weight_of_a_sequence_by_hand():
    batch = {"prompt": TOK.encode("a")[None], "chosen": TOK.encode("b")[None], "chosen_mask": torch.tensor([[True]])}
    lp = family().pair_logps(Bigram(POLICY), None, batch, wpo_weights=True)
    p = [math.exp(logp(POLICY, 0, j)) for j in range(3)]
    assert lp.chosen_wpo_logweight.item() == pytest.approx(math.log(p[1]) - math.log(sum(q * q for q in p)), rel=1e-5)


def test_sampling_is_seeded_batched_and_runs_past_the_block():
    model = Bigram(POLICY, block_size=4)
    prompts = torch.stack([TOK.encode("ab"), TOK.encode("ca")])

    def run(seed):
        return sample(model, prompts, 10, 3, 4, generator=torch.Generator().manual_seed(seed))

    first = run(1)
    assert first.shape == (2, 10) and torch.equal(first, run(1)) and not torch.equal(first, run(2))
    greedy = sample(model, prompts, 3, 3, 4, temperature=0)
    # greedy bigram: after b -> a (row 1 argmax 0), after a -> c, after c -> a
    assert TOK.decode(greedy[0]) == "aca" and torch.equal(
        sample(model, prompts, 3, 3, 4, top_k=1, generator=torch.Generator().manual_seed(5)), greedy
    )


def test_rollout_shapes_and_old_logps_match_a_rescore():
    f = family()
    f.max_new_tokens = 5
    batch = {"prompt": torch.stack([TOK.encode("ab"), TOK.encode("ba")])}
    torch.manual_seed(0)
    rollout = f.rollout(Bigram(POLICY), batch, k=3)
    assert rollout.responses.shape == (2, 3, 5) and rollout.mask.all()
    torch.testing.assert_close(f.response_logps(Bigram(POLICY), rollout).tokens, rollout.old_logps)


def test_pretraining_through_the_cli_on_synthetic_text(in_tmp):
    main(
        [
            "fit",
            "--config",
            str(CONFIGS / "lm_pretrain.yaml"),
            "--data.init_args.source=synthetic",
            "--data.init_args.synthetic_chars=20000",
            "--data.init_args.steps_per_epoch=30",
            "--data.init_args.block_size=32",
            "--model.backbone.init_args.block_size=32",
            "--model.backbone.init_args.d_model=32",
            "--model.backbone.init_args.d_ff=64",
            "--trainer.max_epochs=2",
            "--model.export_path=artifacts/lm.pt",
            "--trainer.log_every_n_steps=5",
        ]
    )
    run = in_tmp / "runs/lm_pretrain/version_0"
    weights = torch.load(in_tmp / "artifacts/lm.pt", weights_only=True)
    vocab = CharTokenizer.from_codes(weights["state_dict"]["vocab"])
    assert vocab is not None and "e" in vocab.chars  # the tokenizer travels with the weights
    metrics = json.loads((run / "results_test.json").read_text())["metrics"]
    assert metrics["test/loss"] < 0.7 * math.log(len(vocab))  # well below a uniform guess
    assert metrics["test/bpc"] == pytest.approx(metrics["test/loss"] / math.log(2))
    assert {p.name.rsplit("_step", 1)[0] for p in (run / "tables").iterdir()} >= {
        "val_top_k_next",
        "val_samples",
        "test_samples",
    }
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert {"train/grad_norm", "train/loss", "val/loss", "val/ppl", "val/bpc", "val/ece", "val/entropy"} <= set(header)
    assert list((run / "images").glob("val_calibration*.png"))
