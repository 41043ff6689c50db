"""scripts/lm_results.py: the n-gram baselines it reports, by hand."""

import importlib.util
import math

import torch

from tests.conftest import REPO


def load():
    spec = importlib.util.spec_from_file_location("lm_results", REPO / "scripts/lm_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ngram_baselines_by_hand():
    # train 0 1 0 1: unigram counts + 1 = (3, 3) -> p = 1/2; bigram counts 0->1: 2, 1->0: 1, + 1 each -> p(1|0) = 3/4
    out = load().ngram_baselines(torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1]), 2)
    assert math.isclose(out["unigram"], math.log(2), rel_tol=1e-9)
    assert math.isclose(out["bigram"], -math.log(0.75), rel_tol=1e-9)


def write_run(root, name, metrics):
    import json

    folder = root / "runs" / name / "version_0"
    folder.mkdir(parents=True)
    (folder / "results_test.json").write_text(json.dumps({"metrics": metrics, "global_step": 10}))
    (folder / "config.yaml").write_text("data:\n  init_args: {batch_size: 4, block_size: 8, eval_prompts: 64}\n")
    return folder


def test_rows_come_from_the_logged_test_metrics(tmp_path, monkeypatch):
    script = load()
    monkeypatch.setattr(script, "REPO", tmp_path)
    pre = write_run(
        tmp_path,
        "lm_pretrain",
        {"test/loss": 1.5, "test/entropy": 1.4, "test/valid_words": 0.8, "test/real/valid_words": 0.9},
    )
    run = write_run(
        tmp_path,
        "lm_dpo",
        {
            "test/loss": 1.65,
            "test/entropy": 1.3,
            "test/kl_ref": 0.01,
            "test/valid_words": 0.85,
            "test/real/valid_words": 0.9,
            "test/reference/loss": 1.5,
            "test/reference/valid_words": 0.8,
        },
    )
    ref, dpo = script.row_from_run("reference", pre), script.row_from_run("dpo", run)
    assert ref["kl_ref"] == 0.0 and ref["val_loss_vs_reference"] == 0.0
    assert math.isclose(dpo["val_loss_vs_reference"], 0.1) and math.isclose(
        dpo["gap_closed"], 0.5
    )  # (0.85 − 0.8) / (0.9 − 0.8)
    text = script.table([ref, dpo], "header")
    assert "| RPO, best-of-2 pairs (configs/lm_dpo.yaml) | 1.6500 | +10.0% | 1.3000 | 0.0100 | 0.850 | 50% |" in text
    assert text.endswith("(../figures/lm_frontier.png)")  # relative to docs/families/language.md
