"""TRL 1.16's length-aware DPO options: ``loss_type="sigmoid_norm"`` (SigmoidNorm), ``ld_alpha`` (LDDPO) and IPO's
per-token log-ratios, on numbers worked by hand from TRL's formulas (trl/trainer/dpo_trainer.py, ``_compute_loss``)."""

from __future__ import annotations

import math

import pytest
import torch

from prefalign.families.sequences import reduce_sequences, shared_lengths, split_sums
from prefalign.objectives import DPO, IPO, LDDPO, PairLogps, SigmoidNorm

# One pair: chosen log-ratio -10 - (-12) = 2 over 4 tokens (0.5 per token); rejected -9 - (-8) = -1 over 2 tokens (-0.5).
PAIR = PairLogps(
    policy_chosen=torch.tensor([-10.0]),
    policy_rejected=torch.tensor([-9.0]),
    reference_chosen=torch.tensor([-12.0]),
    reference_rejected=torch.tensor([-8.0]),
    chosen_length=torch.tensor([4.0]),
    rejected_length=torch.tensor([2.0]),
)


def test_sigmoid_norm_averages_each_log_ratio_over_its_tokens():
    out = SigmoidNorm(beta=0.1)(PAIR)
    # TRL: delta = chosen_scores / |chosen| - rejected_scores / |rejected| = 0.5 + 0.5; loss = -logsigmoid(beta * delta)
    assert out.loss.item() == pytest.approx(math.log1p(math.exp(-0.1)), abs=1e-7)
    # TRL logs the unnormalised rewards beta * (log pi - log pi_ref) and the summed log-probs
    assert out.metrics["rewards/chosen"].item() == pytest.approx(0.2)
    assert out.metrics["rewards/rejected"].item() == pytest.approx(-0.1)
    assert out.metrics["logps/chosen"].item() == -10.0
    # Plain DPO on the same pair uses the sums: margin 3, not 1
    assert DPO(beta=0.1)(PAIR).loss.item() == pytest.approx(math.log1p(math.exp(-0.3)), abs=1e-7)


def test_ipo_divides_each_log_ratio_by_its_token_count_when_the_family_gives_counts():
    assert IPO(tau=0.1)(PAIR).loss.item() == pytest.approx(
        (1.0 - 5.0) ** 2
    )  # TRL: (ipo_delta - 1/(2 beta))^2, ipo_delta = 1
    unpaired_lengths = PairLogps(
        PAIR.policy_chosen, PAIR.policy_rejected, PAIR.reference_chosen, PAIR.reference_rejected
    )
    assert IPO(tau=0.1)(unpaired_lengths).loss.item() == pytest.approx(
        (3.0 - 5.0) ** 2
    )  # one-label responses: the sums


def test_ld_alpha_keeps_the_shared_length_and_down_weights_the_longer_tail():
    # Two pairs in TRL's layout (chosen rows, then rejected rows); prompt tokens (mask 0) lead, padding (mask 0) trails.
    tokens = torch.tensor(
        [[-9.0, -1, -2, -3, -4, 0], [-9.0, -9, -1, 0, 0, 0], [-9.0, -1, -1, 0, 0, 0], [-9.0, -9, -2, -2, -2, -2]]
    )
    mask = torch.tensor(
        [[0, 1, 1, 1, 1, 0], [0, 0, 1, 0, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1]], dtype=torch.bool
    )
    shared = shared_lengths(mask, 2)
    assert shared.tolist() == [2, 1, 2, 1]
    head, tail = split_sums(tokens, mask, shared)
    lengths = mask.sum(-1).float()
    # TRL: shared_logps + ld_alpha * tail_logps, positions counted along the completion mask
    torch.testing.assert_close(
        reduce_sequences(head, tail, lengths, ld_alpha=0.5), torch.tensor([-3 - 3.5, -1.0, -2.0, -2 - 3.0])
    )
    torch.testing.assert_close(
        reduce_sequences(head, tail, lengths), torch.tensor([-10.0, -1.0, -2.0, -8.0])
    )  # the plain sum
    torch.testing.assert_close(
        reduce_sequences(head, tail, lengths, length_normalized=True), torch.tensor([-2.5, -1.0, -1.0, -2.0])
    )


def test_lddpo_is_dpo_with_the_family_applying_ld_alpha():
    objective = LDDPO(beta=0.1, ld_alpha=0.3)
    assert objective.ld_alpha == 0.3 and "token_lengths" in objective.requires
    assert objective(PAIR).loss.item() == DPO(beta=0.1)(PAIR).loss.item()  # the loss itself is DPO's
    with pytest.raises(ValueError, match="ld_alpha=1.5 is out of range"):
        LDDPO(ld_alpha=1.5)


def test_ld_alpha_on_the_char_language_family_uses_the_same_split():
    from tests.families.cases import language_case

    case = language_case()
    plain = case.family.pair_logps(case.backbone, None, case.pairs)
    one = case.family.pair_logps(case.backbone, None, case.pairs, ld_alpha=1.0)
    half = case.family.pair_logps(case.backbone, None, case.pairs, ld_alpha=0.5)
    torch.testing.assert_close(one.policy_chosen, plain.policy_chosen)
    torch.testing.assert_close(plain.chosen_length, torch.tensor([3.0, 3.0, 3.0]))
    torch.testing.assert_close(plain.rejected_length, torch.tensor([3.0, 2.0, 3.0]))
    # Pair 1's chosen response is one token longer than its rejected: only that token's log-prob is halved.
    assert not torch.equal(half.policy_chosen[1], plain.policy_chosen[1])
    torch.testing.assert_close(half.policy_chosen[[0, 2]], plain.policy_chosen[[0, 2]])


def test_modifiers_carry_ld_alpha_to_the_family():
    from prefalign.objectives import WPO, FDivergence, WeightedSum

    assert WPO(LDDPO(ld_alpha=0.3)).ld_alpha == 0.3
    assert FDivergence(LDDPO(ld_alpha=0.3), divergence="js_divergence").ld_alpha == 0.3
    assert WeightedSum([LDDPO(ld_alpha=0.3), LDDPO(beta=0.2, ld_alpha=0.3)], weights=[1.0, 1.0]).ld_alpha == 0.3
    with pytest.raises(ValueError, match="disagree on ld_alpha"):
        WeightedSum([LDDPO(ld_alpha=0.3), DPO()], weights=[1.0, 1.0])
