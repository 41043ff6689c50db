"""Every TRL 1.16 DPO ``loss_type`` (and option) that has a prefalign class gives TRL's first 3 steps on the tiny model.

16 different rows in batches of 8, so steps 1-2 and 3 see different data and the sort-based (AOT) and running-mean
(BCO) losses see real batches. The mapping is the one docs/objectives.md states.
"""

from __future__ import annotations

import pytest

from tests.hf.test_parity import KEYS, TOLERANCE, run_prefalign, run_trl

pytest.importorskip("trl")

OBJ = "--model.objective=prefalign.objectives."
ARG = "--model.objective.init_args."

# name: (TRL loss_type, other DPOConfig fields, prefalign objective arguments)
CASES = {
    "robust": ("robust", {"label_smoothing": 0.1}, [OBJ + "RobustDPO", ARG + "label_smoothing=0.1"]),
    "exo_pair": ("exo_pair", {"label_smoothing": 1e-3}, [OBJ + "EXO", ARG + "label_smoothing=0.001"]),
    "hinge": ("hinge", {}, [OBJ + "Hinge"]),
    "nca_pair": ("nca_pair", {}, [OBJ + "NCA"]),
    "bco_pair": ("bco_pair", {}, [OBJ + "BCO"]),
    "sppo_hard": ("sppo_hard", {}, [OBJ + "SPPO"]),
    "aot": ("aot", {}, [OBJ + "AOT"]),
    "aot_unpaired": ("aot_unpaired", {}, [OBJ + "AOTPair"]),
    "apo_zero": ("apo_zero", {}, [OBJ + "APOZero"]),
    "apo_down": ("apo_down", {}, [OBJ + "APODown"]),
    "discopop": ("discopop", {"discopop_tau": 0.05}, [OBJ + "DiscoPOP", ARG + "tau=0.05"]),
    # sigmoid ignores label_smoothing in TRL 1.16 (only robust, exo_pair and aot read it): plain DPO.
    "sigmoid_label_smoothing_ignored": ("sigmoid", {"label_smoothing": 0.2}, [OBJ + "DPO"]),
    "rpo_as_sigmoid_plus_sft": (
        ["sigmoid", "sft"],
        {"loss_weights": [1.0, 0.5]},
        [OBJ + "RPO", ARG + "alpha=0.5", ARG + "nll=token_mean"],
    ),
    "f_divergence_js": (
        "sigmoid",
        {"f_divergence_type": "js_divergence"},
        [OBJ + "FDivergence", ARG + "objective=prefalign.objectives.DPO", ARG + "divergence=js_divergence"],
    ),
    "use_weighting": ("sigmoid", {"use_weighting": True}, [OBJ + "WPO", ARG + "objective=prefalign.objectives.DPO"]),
}
NO_BETA = ("FDivergence", "WPO")  # modifiers: beta belongs to the wrapped objective (0.1 by default, as TRL's)


@pytest.mark.parametrize("case", sorted(CASES))
def test_trl_loss_type_matches_over_three_steps(case, tiny_model, data_files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    loss_type, config, objective = CASES[case]
    if not any(name in objective[0] for name in NO_BETA):
        objective = [*objective, ARG + "beta=0.1"]
    theirs = run_trl(tiny_model, data_files["distinct"], loss_type, 0.1, tmp_path / "trl", batch_size=8, **config)
    ours = run_prefalign(tiny_model, data_files["distinct"], objective, tmp_path / "prefalign", batch_size=8)
    assert len(theirs) == len(ours) == 3
    worst = {k: max(abs(t[k] - o[k]) for t, o in zip(theirs, ours)) for k in KEYS}
    print(f"{case}: max |TRL - prefalign| over 3 steps: " + ", ".join(f"{k} {v:.2e}" for k, v in worst.items()))
    for k in KEYS:
        assert worst[k] <= TOLERANCE[k], (k, [t[k] for t in theirs], [o[k] for o in ours])
