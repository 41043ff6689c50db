"""What every reporting script shares: where each generated block lives, writing it, finding runs, the machine.

The result tables and benchmark reports on the documentation site are generated blocks between
``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` markers; :data:`BLOCKS` says which page holds which block, and
:func:`write_block` rewrites one. Scripts are run as ``python scripts/<name>.py`` (this folder is then first on
``sys.path``) and loaded by path from the tests; both import this module after putting ``scripts/`` on the path::

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import reporting

Pages are found relative to a repository root passed in (the scripts pass their module-level ``REPO``, which the
tests point to a temporary folder).
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: generated block name → the page that holds it, relative to the repository root
BLOCKS: dict[str, str] = {
    "objectives": "docs/objectives.md",  # scripts/objective_table.py
    "seed": "docs/families/classifier.md",  # scripts/explain_seed.py
    "results": "docs/families/classifier.md",  # scripts/compare_objectives.py
    "lmpretrain": "docs/families/language.md",  # scripts/lm_results.py
    "lm": "docs/families/language.md",  # scripts/lm_results.py
    "diffusion": "docs/families/diffusion.md",  # scripts/diffusion_results.py
    "diffusion-seeds": "docs/families/diffusion.md",  # scripts/diffusion_seeds.py
    "bench": "docs/performance.md",  # scripts/update_docs.py (from benchmarks/latest.md)
    "bench-plain": "docs/performance.md",  # scripts/update_docs.py (from benchmarks/plain_pair/latest.md)
    "benchlm": "docs/performance.md",  # scripts/bench_lm.py
    "benchprecision": "docs/performance.md",  # scripts/bench_precision.py
    "bench-hf": "docs/performance.md",  # scripts/bench_hf.py
    "bench-hf-tiny": "docs/performance.md",  # scripts/bench_hf.py --size tiny
    "profile": "docs/performance.md",  # scripts/profile_pipeline.py
    "bench-hf-grpo": "docs/performance.md",  # scripts/bench_hf.py --method grpo
    "hfrecipe": "docs/huggingface.md",  # scripts/hf_recipe_results.py
    "hfrecipe-grpo": "docs/huggingface.md",  # scripts/hf_grpo_recipe_results.py
    "families": "README.md",  # update_family_table(), from the results files
}


def markers(name: str) -> tuple[str, str]:
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def page(name: str, root: Path = REPO) -> Path:
    """The page that holds block ``name``."""
    return Path(root) / BLOCKS[name]


def read_block(path: Path, name: str) -> str:
    """The text between the block's markers (without the newline after the begin marker)."""
    begin, end = markers(name)
    content = Path(path).read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{path} lacks the {begin} / {end} markers")
    return content.split(begin, 1)[1].split(end, 1)[0].removeprefix("\n")


def replace_between_markers(path: Path, text: str, name: str) -> None:
    """Replace the generated block between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``path``."""
    begin, end = markers(name)
    content = Path(path).read_text()
    if begin not in content or end not in content:
        raise SystemExit(f"{path} lacks the {begin} / {end} markers")
    head, rest = content.split(begin, 1)
    _, tail = rest.split(end, 1)
    Path(path).write_text(f"{head}{begin}\n{text.rstrip(chr(10))}\n{end}{tail}")


def write_block(name: str, text: str, root: Path = REPO) -> Path:
    """Rewrite block ``name`` on its page (see :data:`BLOCKS`); returns the page."""
    path = page(name, root)
    replace_between_markers(path, text, name)
    return path


def link(target: str, name: str, root: Path = REPO) -> str:
    """``target`` (a path relative to the repository root, e.g. ``docs/figures/x.png``) as a link relative to the
    page of block ``name``: what an image inside that block must say."""
    return Path(os.path.relpath(Path(root) / target, page(name, root).parent)).as_posix()


def latest_run(name: str, needs: str = "results_test.json", root: Path = REPO) -> Path | None:
    """The newest ``runs/<name>/version_<n>`` folder (highest n) that holds the file ``needs``, or None."""
    found = sorted(
        (Path(root) / "runs" / name).glob(f"version_*/{needs}"), key=lambda p: int(p.parent.name.split("_")[1])
    )
    return found[-1].parent if found else None


def _cpu() -> tuple[str, set[str]]:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return model, flags


def machine_info(threads: int | None = None) -> dict:
    """The machine a measurement ran on: CPU model, cores, the instruction-set flags that decide the fast precision,
    torch (and Lightning, Python) versions."""
    import torch

    model, flags = _cpu()
    try:
        import lightning

        lightning_version = lightning.__version__
    except ImportError:  # pragma: no cover - prefalign depends on it
        lightning_version = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "flags": {
            f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")
        },
        "torch": torch.__version__,
        "lightning": lightning_version,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "threads": threads if threads is not None else torch.get_num_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def describe_machine(machine: dict | None = None) -> str:
    """One phrase for a table header: ``AMD EPYC, 2 cores, avx512_bf16 no, torch 2.14.1``."""
    m = machine or machine_info()
    return f"{m['cpu']}, {m['cores']} cores, avx512_bf16 {'yes' if m['flags'].get('avx512_bf16') else 'no'}, torch {m['torch']}"


# ------------------------------------------------------------------------------------------- the README's family table


def _row(rows: list[dict], name: str) -> dict:
    return next(r for r in rows if r["name"] == name)


def _classifier(root: Path) -> str:
    saved = json.loads((Path(root) / "docs/results.json").read_text())
    rpo = _row(saved["rows"], "rpo")
    return f"noisy test accuracy {saved['reference']['noisy']:.3f} → {rpo['test/acc_noisy']:.3f} (RPO; clean {rpo['test/acc_clean']:.3f})"


def _language(root: Path) -> str:
    rows = json.loads((Path(root) / "docs/lm_results.json").read_text())["rows"]
    ref, ppo = _row(rows, "reference"), _row(rows, "ppo")
    return (
        f"valid-word rate of samples {ref['valid_words']:.3f} → {ppo['valid_words']:.3f} (PPO-lite; "
        f"loss {ppo['val_loss_vs_reference']:+.1%})"
    )


def _hf_recipe(root: Path) -> str:
    r = json.loads((Path(root) / "docs/hf_recipe_results.json").read_text())
    return (
        f"valid-word rate of samples {r['reference']['valid_words']:.3f} → {r['policy']['valid_words']:.3f} "
        f"({r['objective']}; loss {r['loss_vs_reference']:+.1%}; {r['timing']['wall_seconds'] / 60:.0f} min on 2 CPU cores, no hub)"
    )


def _hf_grpo_recipe(root: Path) -> str:
    r = json.loads((Path(root) / "docs/hf_grpo_recipe_results.json").read_text())
    wall = r["timing"].get("clean", {}).get("wall_seconds")
    return (
        f"valid-word rate of samples {r['reference']['valid_words']:.3f} → {r['policy']['valid_words']:.3f} "
        f"(GRPO, {r['gap_closed']:.0%} of the gap to real text; loss {r['loss_vs_reference']:+.1%}"
        + (f"; {wall / 60:.0f} min with pretraining on 2 CPU cores" if wall else "")
        + ")"
    )


def _diffusion(root: Path) -> str:
    rpo = _row(json.loads((Path(root) / "docs/diffusion_results.json").read_text())["rows"], "rpo")
    return f"judge's error rate {rpo['reference']['error_rate']:.3f} → {rpo['error_rate']:.3f} (RPO; win rate {rpo['win_rate']:.0%})"


#: the README's model families: (name, page, command, headline from the page's saved results)
FAMILIES = [
    (
        "Classifier on noisy MNIST",
        "docs/families/classifier.md",
        "python -m prefalign fit --config configs/dpo.yaml",
        _classifier,
    ),
    (
        "Character-level transformer on Shakespeare",
        "docs/families/language.md",
        "python -m prefalign fit --config configs/lm_ppo.yaml",
        _language,
    ),
    (
        "Class-conditional diffusion UNet on MNIST",
        "docs/families/diffusion.md",
        "python -m prefalign fit --config configs/diffusion_dpo.yaml",
        _diffusion,
    ),
    (
        "Llama built from a config, offline: tokenizer, pretraining, mining, RPO",
        "docs/huggingface.md#offline-recipe",
        "python -m prefalign fit --config configs/hf_shakespeare_dpo.yaml",
        _hf_recipe,
    ),
    (
        "The same Llama, offline: GRPO on a lexical reward",
        "docs/huggingface.md#offline-grpo-recipe",
        "python -m prefalign fit --config configs/hf_shakespeare_grpo.yaml",
        _hf_grpo_recipe,
    ),
    (
        "Hugging Face causal LMs, TRL-format data",
        "docs/huggingface.md",
        "python -m prefalign fit --config configs/hf_dpo.yaml --model_name_or_path DIR --dataset_name FILE",
        None,
    ),
]


def family_table(root: Path = REPO) -> str:
    """The README's table of model families, each with one command and one headline number from its saved results
    (``docs/results.json``, ``docs/lm_results.json``, ``docs/diffusion_results.json``)."""
    lines = ["| model family | run it | headline (test) |", "|---|---|---|"]
    for name, page_path, command, headline in FAMILIES:
        lines.append(f"| [{name}]({page_path}) | `{command}` | {headline(root) if headline else '—'} |")
    return "\n".join(lines)


def update_family_table(root: Path = REPO) -> None:
    """Rewrite the README's family table (block ``families``) from the saved results; a results script calls this
    after writing its JSON. Does nothing where the README has no such block (the scripts' tests)."""
    readme = Path(root) / BLOCKS["families"]
    if readme.is_file() and markers("families")[0] in readme.read_text():
        write_block("families", family_table(root), root)


def publish_recipe_results(results: dict, json_name: str, block_name: str, text: str, write_docs: bool) -> None:
    """A recipe results script's last step: its measurements to ``docs/<json_name>`` (which the README's family
    table reads), its block printed, and, unless ``write_docs`` is false, the block and the family table rewritten."""
    (REPO / "docs" / json_name).write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    print(text)
    if write_docs:
        write_block(block_name, text, REPO)
        update_family_table(REPO)
