"""scripts/diffusion_results.py: the table and the bar verdicts, from fabricated results files."""

import importlib.util
import json

from tests.conftest import REPO


def load():
    spec = importlib.util.spec_from_file_location("diffusion_results", REPO / "scripts/diffusion_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_run(root, name, metrics, fit_seconds, mining=(60.0, 0.0), precision="bf16-mixed"):
    folder = root / "runs" / name / "version_0"
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"trainer:\n  precision: {precision}\n")
    (folder / "results_test.json").write_text(json.dumps({"metrics": metrics, "fit_seconds": fit_seconds}))
    (folder / "metrics.csv").write_text(
        f"epoch,step,mining/seconds,mining/from_cache,train/loss\n0,0,{mining[0]},{mining[1]},\n0,10,,,0.5\n"
    )


def test_table_compares_each_policy_with_its_own_reference(tmp_path, monkeypatch):
    script = load()
    monkeypatch.setattr(script, "REPO", tmp_path)
    page = tmp_path / "docs" / "families" / "diffusion.md"
    page.parent.mkdir(parents=True)
    page.write_text("x\n<!-- diffusion:begin -->\nold\n<!-- diffusion:end -->\ny\n")
    ref = {"error_rate": 0.2, "p_class": 0.8, "fid": 10.0, "diversity": 15.0, "eps_mse": 0.02}
    write_run(tmp_path, "diffusion_pretrain", {f"test/{k}": v for k, v in ref.items()}, 600)
    refs = {f"test/reference/{k}": v for k, v in ref.items()}
    good = {
        "test/error_rate": 0.09,
        "test/p_class": 0.9,
        "test/fid": 10.5,
        "test/diversity": 14.0,
        "test/eps_mse": 0.02,
        "test/win_rate": 0.65,
    }
    bad = {**good, "test/error_rate": 0.15, "test/fid": 12.0}
    write_run(
        tmp_path, "diffusion_dpo_b5000", {**good, **refs, "test/real/diversity": 12.5}, 600
    )  # mined in this run: its fit time includes mining
    write_run(
        tmp_path, "diffusion_dpo_b2000", {**bad, **refs}, 1240, mining=(60.0, 1.0), precision="32-true"
    )  # cached pairs: + 1 min
    assert script.main(["--docs", str(tmp_path / "docs")]) == 0
    readme = page.read_text()
    assert "old" not in readme and readme.startswith("x\n") and readme.endswith("y\n")
    assert (
        "torch " in readme and ", 32-true, bf16-mixed)" in readme
    )  # the precisions the runs' saved configs say they ran in
    rows = {line.split(" | ")[0]: line for line in readme.splitlines() if line.startswith("| ")}
    assert rows["| DPO β=5000, 700 steps"].endswith("| 20.0 min | met |")
    # 0.15 > ½·0.2, 12 > 1.1·10, 10 + 21.7 min > 30
    assert rows["| DPO β=2000, 700 steps"].endswith("missed: error ≤ ½ ref, FID ≤ 1.1 ref, ≤ 30 min |")
    data = json.loads((tmp_path / "docs" / "diffusion_results.json").read_text())
    assert data["reference"]["error_rate"] == 0.2 and len(data["rows"]) == 2
    assert (
        rows["| real test digits (for scale)"] == "| real test digits (for scale) | — | — | — | 12.50 | — | — | — | — |"
    )
    assert data["real_diversity"] == 12.5
