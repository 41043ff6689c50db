"""scripts/diffusion_seeds.py: the command lines of a seed, and the seeds table from run folders written the way
`prefalign fit` / `prefalign test` write them (results_test.json, metrics.csv, config.yaml), without training."""

import csv
import importlib.util
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

KEYS = ("error_rate", "p_class", "fid", "diversity", "eps_mse")
PAGE = "x\n<!-- diffusion-seeds:begin -->\nold\n<!-- diffusion-seeds:end -->\ny\n"


def load():
    spec = importlib.util.spec_from_file_location("diffusion_seeds", REPO / "scripts/diffusion_seeds.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_csv(path, records):
    keys = sorted({k for r in records for k in r} - {"epoch", "step"})
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["epoch", "step", *keys])
        writer.writeheader()
        writer.writerows(records)


def write_run(root, name, metrics, fit_seconds=None, records=(), precision="32-true", wall=None, version=0):
    """A finished run folder as prefalign's CLI leaves it (`prefalign.run_results.write_results`: sorted keys; fit_seconds after a fit only)."""
    folder = root / "runs" / name / f"version_{version}"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"seed_everything: 0\ntrainer:\n  precision: {precision}\n  max_steps: 900\n")
    results = {"stage": "test", "objective": "RPO", "metrics": metrics, "global_step": 900}
    if fit_seconds is not None:
        results["fit_seconds"] = fit_seconds
    (folder / "results_test.json").write_text(json.dumps(results, indent=2, sort_keys=True))
    write_csv(folder / "metrics.csv", [*records, {"epoch": 0, "step": 900, **metrics}])
    if wall is not None:
        (folder / "wall.json").write_text(json.dumps({"wall_seconds": wall, "command": []}))
    return folder


def test_metrics(policy_error, reference_error, fid=9.0):
    reference = {"error_rate": reference_error, "p_class": 0.8, "fid": 10.0, "diversity": 15.0, "eps_mse": 0.025}
    policy = {**reference, "error_rate": policy_error, "p_class": 0.9, "fid": fid, "diversity": 14.0}
    return {
        **{f"test/{k}": v for k, v in policy.items()},
        **{f"test/reference/{k}": v for k, v in reference.items()},
        "test/win_rate": 0.8,
        "test/real/diversity": 12.6,
    }


test_metrics.__test__ = False  # a helper, not a test


def alignment_records(mining_seconds, from_cache):
    """metrics.csv of an alignment fit: the mining record at fit start, train rows, validations (the reference's
    numbers only at the first)."""
    return [
        {"epoch": 0, "step": 0, "mining/seconds": mining_seconds, "mining/from_cache": from_cache, "mining/pairs": 900},
        {"epoch": 0, "step": 9, "train/loss": 0.69},
        {"epoch": 2, "step": 131, "val/error_rate": 0.12, "val/reference/error_rate": 0.2, "val/win_rate": 0.7},
        {"epoch": 5, "step": 263, "val/error_rate": 0.07, "val/win_rate": 0.85, "val/diversity": 13.9},
    ]


#: seed → (validation: policy error, reference error, FID; held-out: policy error, reference error; mining cached)
SEEDS = {
    0: ((0.08, 0.2, 9.0), (0.10, 0.25), 0.0),  # every criterion, with the margin, on both noises
    1: ((0.084, 0.2, 9.0), (0.12, 0.25), 0.0),  # held-out: 0.48 of the reference's: ½ met, the 0.45 margin missed
    2: ((0.088, 0.2, 11.5), (0.10, 0.25), 1.0),  # FID 1.15 × ref; cached pairs: + 10 min of mining = 32 min
}


def fake_runs(root, seeds=SEEDS, heldout=True):
    for seed, ((err, ref, fid), (h_err, h_ref), cached) in seeds.items():
        walls = {"wall": 660} if seed == 0 else {}
        write_run(root, f"diffusion_pretrain_seed{seed}", {f"test/{k}": 0.1 for k in KEYS}, 600, **walls)
        walls = {"wall": 780} if seed == 0 else {}
        write_run(
            root, f"diffusion_dpo_seed{seed}", test_metrics(err, ref, fid), 720, alignment_records(600, cached), **walls
        )
        if heldout:  # a `test` run: no fit_seconds, no mining record
            write_run(root, f"diffusion_dpo_seed{seed}_heldout", test_metrics(h_err, h_ref))


def test_table_from_runs_marks_every_criterion_and_summarises_the_seeds(tmp_path, monkeypatch, capsys):
    script = load()
    monkeypatch.setattr(script, "REPO", tmp_path)
    page = tmp_path / "docs" / "families" / "diffusion.md"
    page.parent.mkdir(parents=True)
    page.write_text(PAGE)
    fake_runs(tmp_path)
    write_run(tmp_path, "diffusion_dpo_seed1", test_metrics(0.3, 0.2), 720, alignment_records(600, 0.0), version=1)
    (tmp_path / "runs" / "diffusion_dpo_seed1" / "version_2").mkdir()  # unfinished: ignored
    assert script.main(["--from-runs"]) == 0
    md = (tmp_path / "docs" / "diffusion_seeds.md").read_text()
    assert md in capsys.readouterr().out
    rows = {tuple(line.split(" | ")[:2]): line for line in md.splitlines() if line.startswith("| ")}
    assert rows["| 0", "validation"] == (
        "| 0 | validation | 0.080 / 0.200 | 0.400 ✓✓ | 0.900 ✓ | 0.933 ✓ | 0.800 ✓ | 22.0 min (wall 24.0) ✓ | — |"
    )
    assert rows["| 0", "held-out"].startswith("| 0 | held-out | 0.100 / 0.250 | 0.400 ✓✓ |")
    # the newest finished version of seed 1: error 0.3 against 0.2, every error criterion missed
    assert rows["| 1", "validation"].startswith("| 1 | validation | 0.300 / 0.200 | 1.500 ✗✗ |")
    assert rows["| 1", "held-out"] == (
        "| 1 | held-out | 0.120 / 0.250 | 0.480 ✓✗ | 0.900 ✓ | 0.933 ✓ | 0.800 ✓ | 22.0 min ✓ | error ≤ 0.45 ref |"
    )
    assert rows["| 2", "validation"].endswith("| 1.150 ✗ | 0.933 ✓ | 0.800 ✓ | 32.0 min ✗ | FID ≤ 1.1 ref, ≤ 30 min |")
    assert rows["| 2", "held-out"].endswith("| 0.900 ✓ | 0.933 ✓ | 0.800 ✓ | 32.0 min ✗ | ≤ 30 min |")
    # mean ± sample sd [min–max] over the three seeds
    assert rows["| validation", "3"].startswith(
        "| validation | 3 | 0.780 ± 0.624 [0.400–1.500] | 0.983 ± 0.144 [0.900–1.150] | 0.933 ± 0.000 [0.933–0.933] "
        "| 0.800 ± 0.000 [0.800–0.800] | 25.3 ± 5.8 [22.0–32.0] |"
    )
    assert "| held-out | 3 | 0.427 ± 0.046 [0.400–0.480] |" in md
    assert rows["| held-out", "3"].endswith(
        "| error ≤ ½ ref 3/3, error ≤ 0.45 ref 2/3, FID ≤ 1.1 ref 3/3, diversity ≥ 0.9 ref 3/3, win ≥ 60% 3/3, ≤ 30 min 2/3 |"
    )
    assert "**Verdict: met on 1 of 3 seeds**" in md
    assert "The bar without the margin: 1 of 3 on the validation noise, 2 of 3 on the held-out noise." in md
    assert "`python scripts/diffusion_seeds.py --seeds 0 1 2 --config configs/diffusion_dpo.yaml" in md
    assert "cores" in md and "torch " in md and "32-true" in md and "eval_seed 4321" in md
    assert page.read_text() == PAGE.replace("old\n", md)
    saved = json.loads((tmp_path / "docs" / "diffusion_seeds.json").read_text())
    assert saved["passed_seeds"] == [0] and saved["bar_only"] == {"validation": 1, "held-out": 2}
    assert saved["summary"]["held-out"]["error ≤ ½ ref"] == pytest.approx([0.4, 0.48, 0.4])
    seed0 = saved["rows"][0]
    assert seed0["run"] == "runs/diffusion_dpo_seed0/version_0" and seed0["wall_minutes"] == 24.0
    assert seed0["last_validation"] == {
        "reference_error_rate": 0.2,
        "step": 263.0,
        "error_rate": 0.07,
        "win_rate": 0.85,
        "diversity": 13.9,
    }
    assert saved["rows"][1]["run"] == "runs/diffusion_dpo_seed0_heldout/version_0"


def test_a_seed_without_its_held_out_run_is_not_met(tmp_path, monkeypatch):
    script = load()
    monkeypatch.setattr(script, "REPO", tmp_path)
    fake_runs(tmp_path, {0: SEEDS[0]}, heldout=False)
    assert script.main(["--from-runs", "--seeds", "0", "--no-docs"]) == 0
    md = (tmp_path / "docs" / "diffusion_seeds.md").read_text()
    assert "| 0 | validation |" in md and "held-out |" not in md.split("Over the seeds")[0]
    assert "**Verdict: met on 0 of 1 seeds**" in md
    with pytest.raises(SystemExit, match="no finished"):
        script.main(["--from-runs", "--seeds", "5", "--no-docs"])


def test_command_lines_of_a_seed(tmp_path):
    script = load()
    a = script.parser().parse_args(
        ["--seeds", "1", "--name", "v1200", "--pretrain-extra=--trainer.max_epochs=5", "--heldout-seed", "99"]
        + ["--extra", "--trainer.max_steps=1200", "--data.init_args.seed={seed}", "--config", "configs/model/lora.yaml"]
    )
    assert a.seeds == [1] and a.extra[0] == "--trainer.max_steps=1200"  # everything after --extra is passed on
    cmd = script.commands(2, a, "runs/v1200_seed2/version_0/checkpoints/last.ckpt")
    assert [c[:4] for c in cmd.values()] == [[sys.executable, "-m", "prefalign", "fit"]] * 2 + [
        [sys.executable, "-m", "prefalign", "test"]
    ]
    reference = cmd["reference"]
    assert reference[4:6] == ["--config", "configs/diffusion_pretrain.yaml"]
    assert "--seed_everything=2" in reference and "--wandb=false" in reference
    assert "--model.export_path=artifacts/reference/denoiser_seed2.pt" in reference
    assert "--trainer.logger.init_args.name=diffusion_pretrain_seed2" in reference
    assert reference[-1] == "--trainer.max_epochs=5" and "--trainer.max_steps=1200" not in reference
    for step in ("alignment", "heldout"):
        line = cmd[step]
        assert line[4:6] == ["--config", "configs/diffusion_dpo.yaml"] and "--seed_everything=2" in line
        assert "--model.reference_ckpt=artifacts/reference/denoiser_seed2.pt" in line
        # the extra arguments come after the recipe's, {seed} replaced
        i = line.index("--trainer.max_steps=1200")
        assert line[i : i + 4] == [
            "--trainer.max_steps=1200",
            "--data.init_args.seed=2",
            "--config",
            "configs/model/lora.yaml",
        ]
    assert "--data.init_args.cache_dir=artifacts/pairs/seed2" in cmd["alignment"]
    assert "--trainer.logger.init_args.name=v1200_seed2" in cmd["alignment"]
    assert "--model.family.init_args.eval_seed=99" in cmd["heldout"]
    assert "--model.family.init_args.eval_seed=99" not in cmd["alignment"]
    assert "--trainer.logger.init_args.name=v1200_seed2_heldout" in cmd["heldout"]
    assert cmd["heldout"][-1] == "--ckpt_path=runs/v1200_seed2/version_0/checkpoints/last.ckpt"
    assert script.commands(0, script.parser().parse_args([]))["alignment"][-1] == (
        "--trainer.logger.init_args.name=diffusion_dpo_seed0"
    )


def test_pipeline_runs_each_step_in_order_and_times_it(tmp_path, monkeypatch):
    """Without --from-runs: three subprocesses per seed, the held-out test on the alignment run's checkpoint; a fake
    `subprocess.run` writes the run folder each command names."""
    script = load()
    monkeypatch.setattr(script, "REPO", tmp_path)
    (tmp_path / "docs" / "families").mkdir(parents=True)
    (tmp_path / "docs" / "families" / "diffusion.md").write_text(PAGE)
    calls = []

    def fake_run(cmd, cwd):
        assert cwd == tmp_path
        calls.append(cmd)
        if "--seed_everything=9" in cmd and cmd[3] == "test":
            return subprocess.CompletedProcess(cmd, 1)
        name = next(a for a in cmd if a.startswith("--trainer.logger.init_args.name=")).split("=", 1)[1]
        version = len(list((tmp_path / "runs" / name).glob("version_*")))
        if name.startswith("diffusion_pretrain"):
            write_run(tmp_path, name, {f"test/{k}": 0.1 for k in KEYS}, 600, version=version)
            weights = tmp_path / next(a for a in cmd if a.startswith("--model.export_path=")).split("=", 1)[1]
            weights.parent.mkdir(parents=True, exist_ok=True)
            weights.write_bytes(b"weights")
        elif name.endswith("_heldout"):
            write_run(tmp_path, name, test_metrics(0.1, 0.25), version=version)
        else:
            write_run(tmp_path, name, test_metrics(0.08, 0.2), 720, alignment_records(200, 0.0), version=version)
        return subprocess.CompletedProcess(cmd, 0)

    monkeypatch.setattr(script.subprocess, "run", fake_run)
    assert script.main(["--seeds", "3", "4"]) == 0
    assert [c[3] for c in calls] == ["fit", "fit", "test"] * 2
    assert calls[2][-1] == f"--ckpt_path={tmp_path / 'runs/diffusion_dpo_seed3/version_0/checkpoints/last.ckpt'}"
    assert "--seed_everything=4" in calls[5]
    wall = json.loads((tmp_path / "runs/diffusion_dpo_seed4/version_0/wall.json").read_text())
    assert wall["wall_seconds"] >= 0 and wall["command"] == calls[4][1:]
    md = (tmp_path / "docs" / "diffusion_seeds.md").read_text()
    assert "**Verdict: met on 2 of 2 seeds**" in md and "22.0 min (wall 0.0) ✓" in md
    # --reuse skips the steps whose runs exist; a missing reference weights file makes the seed's steps run again
    calls.clear()
    assert script.main(["--seeds", "3", "--reuse", "--no-docs"]) == 0 and calls == []
    (tmp_path / "artifacts/reference/denoiser_seed3.pt").unlink()
    assert script.main(["--seeds", "3", "4", "--reuse", "--no-docs"]) == 0
    assert [c[3] for c in calls] == ["fit", "fit", "test"] and "--seed_everything=3" in calls[0]
    assert calls[2][-1] == f"--ckpt_path={tmp_path / 'runs/diffusion_dpo_seed3/version_1/checkpoints/last.ckpt'}"
    # a failing step stops the run with the step named; what finished stays
    with pytest.raises(SystemExit, match="seed 9, heldout failed"):
        script.main(["--seeds", "9", "--no-docs"])
    assert (tmp_path / "runs/diffusion_dpo_seed9/version_0/wall.json").is_file()
