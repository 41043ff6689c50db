"""The report of scripts/bench.py: raw worker results → medians per measurement → the performance page's rows, the targets and
their verdicts, as markdown (``benchmarks/latest.{json,md}``). Pure data: no torch, nothing timed here."""

from __future__ import annotations

import json
import statistics
from pathlib import Path


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


#: who ran beside prefalign's pipeline under ``bench.py --concurrent --pair-with``
PARTNERS = {"notebook": "the notebook", "plain": "the plain loop"}

#: phases reported as their total per process (median over repeats) rather than per call
PER_PROCESS_PHASES = ("data", "data@cpu")


def summarise(results: list[dict]) -> dict:
    """Group results by measurement name; epochs and repeats pooled, median taken."""
    groups: dict[str, list[dict]] = {}
    for r in results:
        groups.setdefault(r["spec"]["name"], []).append(r)
    out = {}
    for name, rs in groups.items():
        phases: dict[str, list[float]] = {}
        accs: dict[str, list[float]] = {}
        for r in rs:
            for k, v in r["phases"].items():
                # Data set-up is a per-process cost: prefalign's second fit reuses the first fit's splits, and the
                # median of its calls (one real, one reuse) would hide it.
                phases.setdefault(k, []).extend([sum(v)] if k in PER_PROCESS_PHASES else v)
            for k, v in (r.get("acc") or {}).items():
                if v is not None:
                    accs.setdefault(k, []).append(v)
        out[name] = {
            "contender": rs[0]["spec"]["contender"],
            "task": rs[0]["spec"]["task"],
            "precision": rs[0]["spec"]["precision"],
            "repeats": len(rs),
            "wall": _median([r["wall"] for r in rs]),
            "cpu": _median([r["cpu"] for r in rs]),
            "walls": [round(r["wall"], 2) for r in rs],
            "process_wall": _median([r["process_wall"] for r in rs]),
            "phases": {k: _median(v) for k, v in phases.items()},
            "phase_n": {k: len(v) for k, v in phases.items()},
            "phase_values": {k: [round(x, 3) for x in v] for k, v in phases.items()},
            "counts": rs[0]["counts"],
            "acc": {k: _median(v) for k, v in accs.items()},
            "rss_mb": max(r["rss_mb"] for r in rs),
            "load": [r["load_start"] for r in rs] + [rs[-1]["load_end"]],
            "short": bool(rs[0]["spec"].get("short")),
        }
    return out


def _ratio(a, b):
    return a / b if a and b else None


def build_rows(s: dict, precisions: list[str]) -> tuple[list[dict], list[dict]]:
    """Epoch/mining rows and pipeline rows. Per-sample times are compared, since the notebook trains on 60k
    images and the others on 55k (and mines its own pairs)."""
    nb = s.get("notebook pipeline fp32")

    def row(task, tag, p, e, phase, count, plain):
        if e is None or e["phases"].get(phase) is None or not e["counts"].get(count):
            return None
        n = e["counts"][count]
        w, c = e["phases"][phase] / n, e["phases"].get(phase + "@cpu", 0) / n
        pw = (
            plain["phases"][phase] / plain["counts"][count]
            if plain and plain["phases"].get(phase) and plain["counts"].get(count)
            else None
        )
        pc = plain["phases"].get(phase + "@cpu", 0) / plain["counts"][count] if pw else None
        nw = (
            nb["phases"][phase] / nb["counts"][count]
            if nb and nb["phases"].get(phase) and nb["counts"].get(count)
            else None
        )
        return {
            "task": task,
            "contender": tag,
            "precision": p,
            "seconds": e["phases"][phase],
            "cpu_seconds": e["phases"].get(phase + "@cpu"),
            "samples": n,
            "n": e["phase_n"].get(phase),
            "vs_plain": _ratio(w, pw),
            "vs_plain_cpu": _ratio(c, pc),
            "speedup_vs_notebook": _ratio(nw, w),
        }

    rows = []
    for task, phase, count in (
        ("reference SFT epoch", "sft_epoch", "sft_samples"),
        ("DPO epoch", "dpo_epoch", "pairs"),
        ("mining pass", "mine", "mine_samples"),
    ):
        rows.append(row(task, "(a) notebook", "fp32", nb, phase, count, None))
        for p in precisions:
            plain = s.get(f"plain pipeline {p}")
            rows.append(row(task, "(b) plain", p, plain, phase, count, plain))
            rows.append(row(task, "(c) prefalign", p, s.get(f"prefalign pipeline {p}"), phase, count, plain))
            if phase == "dpo_epoch":
                rows.append(
                    row(
                        task + ", reference recomputed every step",
                        "(c) prefalign",
                        p,
                        s.get(f"prefalign dpo recompute {p}"),
                        phase,
                        count,
                        plain,
                    )
                )
                rows.append(
                    row(
                        task + ", model.compile=false (same run length as the next row)",
                        "(c) prefalign",
                        p,
                        s.get(f"prefalign dpo eager {p}"),
                        phase,
                        count,
                        plain,
                    )
                )
                rows.append(
                    row(
                        task + ", model.compile=true",
                        "(c) prefalign",
                        p,
                        s.get(f"prefalign dpo compile {p}"),
                        phase,
                        count,
                        plain,
                    )
                )
    rows = [r for r in rows if r is not None]
    pipes = []
    order = [("(a) notebook", "fp32", nb)] + [
        (tag, p, s.get(f"{name} pipeline {p}"))
        for p in precisions
        for tag, name in (("(b) plain", "plain"), ("(c) prefalign", "prefalign"))
    ]
    for tag, p, e in order:
        if e is None or e["short"]:  # plain ran 1 SFT + 2 DPO epochs (epoch rows only): not a pipeline
            continue
        plain = s.get(f"plain pipeline {p}")
        plain = None if plain is None or plain["short"] else plain
        pipes.append(
            {
                "contender": tag,
                "precision": p,
                "seconds": e["wall"],
                "cpu_seconds": e["cpu"],
                "n": e["repeats"],
                "speedup_vs_notebook": _ratio(nb["wall"], e["wall"]) if nb else None,
                "speedup_vs_notebook_cpu": _ratio(nb["cpu"], e["cpu"]) if nb else None,
                "vs_plain": _ratio(e["wall"], plain["wall"]) if plain else None,
                "rss_mb": e["rss_mb"],
                "acc": e["acc"],
                "phases": e["phases"],
                "counts": e["counts"],
            }
        )
    return rows, pipes


def _f(x, fmt="{:.2f}", none="–"):
    return none if x is None else fmt.format(x)


def targets(
    rows: list[dict], pipes: list[dict], precisions: list[str], paired: list[float] | None = None
) -> list[dict]:
    """The issues' targets against the rows; with side-by-side pipeline pairs (``bench.py --concurrent``), the fp32
    pipeline's speed-up is the median of the per-repeat ratios ``paired``."""
    out = []

    def find(task, tag, p):
        return next((r for r in rows if r["task"] == task and r["contender"] == tag and r["precision"] == p), None)

    for p in precisions:
        for task in ("reference SFT epoch", "DPO epoch"):
            r = find(task, "(c) prefalign", p)
            if r and r["vs_plain"] is not None:
                ok = r["vs_plain"] <= 1.10
                out.append(
                    {
                        "target": f"{task}, {p}: prefalign ≤ 1.10 × the plain loop (per sample)",
                        "measured": f"{r['vs_plain']:.3f} × wall, {_f(r['vs_plain_cpu'], '{:.3f}')} × CPU time",
                        "ok": ok,
                    }
                )
        cached, rec = (
            find("DPO epoch", "(c) prefalign", p),
            find("DPO epoch, reference recomputed every step", "(c) prefalign", p),
        )
        if cached and rec:
            ratio = (rec["seconds"] / rec["samples"]) / (cached["seconds"] / cached["samples"])
            cpu = (
                (rec["cpu_seconds"] / rec["samples"]) / (cached["cpu_seconds"] / cached["samples"])
                if rec["cpu_seconds"] and cached["cpu_seconds"]
                else None
            )
            out.append(
                {
                    "target": f"DPO epoch, {p}: cached reference log-probs ≥ 1.3 × faster than recomputing them",
                    "measured": f"{ratio:.2f} × wall, {_f(cpu)} × CPU time",
                    "ok": ratio >= 1.3,
                }
            )
    nb = next((x for x in pipes if x["contender"] == "(a) notebook"), None)
    for x in pipes:
        if x["contender"] != "(c) prefalign":
            continue
        if nb is not None:
            mine, theirs = x["acc"].get("policy_noisy"), nb["acc"].get("policy_noisy")
            acc_ok = mine is not None and theirs is not None and mine >= theirs - 0.01
            goal = 1.5 if x["precision"] == "fp32" else 2.0  # the notebook is fp32; bf16 only where the CPU has kernels
            if paired and x["precision"] == "fp32":
                speedup = statistics.median(paired)
                measured = f"{speedup:.2f} × (median of {len(paired)} side-by-side pairs: {', '.join(f'{r:.2f}' for r in paired)})"
            else:
                speedup = x["speedup_vs_notebook"]
                measured = f"{speedup:.2f} × wall, {_f(x['speedup_vs_notebook_cpu'])} × CPU time"
            out.append(
                {
                    "target": f"full notebook pipeline: prefalign {x['precision']} ≥ {goal:g} × faster than the notebook (fp32), at equal or better accuracy",
                    "measured": f"{measured}; noisy test accuracy {_f(mine, '{:.4f}')} vs {_f(theirs, '{:.4f}')}",
                    "ok": speedup >= goal and acc_ok,
                }
            )
        out.append(
            {
                "target": f"peak RSS of a full-MNIST prefalign run ({x['precision']} pipeline) ≤ 2 GB",
                "measured": f"{x['rss_mb']:.0f} MB",
                "ok": x["rss_mb"] <= 2048,
            }
        )
    return out


def markdown(report: dict) -> str:
    m = report["machine"]
    flags = ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in m["flags"].items())
    L = [
        f"# prefalign benchmark ({'quick smoke run, synthetic data: the numbers mean nothing' if report['quick'] else 'real MNIST'})",
        "",
        f"Command: `{report['command']}`  ",
        f"Date: {report['date']}; the whole benchmark took {report['bench_seconds'] / 60:.1f} min.",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores, device {m['device']}; {flags}; torch {m['torch']} "
        f"(CPU capability {m['cpu_capability']}), lightning {m['lightning']}, Python {m['python']}; "
        f"**{m['threads']} intra-op thread(s) for every contender** (`torch.set_num_threads`, `OMP_NUM_THREADS`). "
        f"Load average (1/5/15 min) at start {report['load_start']}, at end {report['load_end']}.",
        "",
        "Seconds are medians: over repeats, and for the epoch rows over every epoch of every repeat (*n* values). "
        "*CPU s* is the process's own CPU time, which other processes' load barely moves (on a shared machine, trust "
        "it for ratios when wall and CPU disagree). Epoch rows time the optimizer steps of one epoch (prefalign: "
        "`on_train_epoch_start` → last `on_train_batch_end`; validation, which only prefalign runs, is listed with the "
        "pipeline). *vs plain* = time per sample ÷ the plain loop's at the same precision (framework overhead). "
        "*speed-up vs notebook* = the notebook's fp32 time per sample ÷ this one (the notebook trains and mines on 60k "
        "images and mines its own pairs; prefalign and plain on 55k, 5k held out for validation).",
        "",
        "| task | contender | precision | wall s | CPU s | samples | samples/s | vs plain (wall) | vs plain (CPU) | speed-up vs notebook | n |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["rows"]:
        sps = (r["samples"] / r["seconds"]) if r["seconds"] and r["samples"] else None
        L.append(
            f"| {r['task']} | {r['contender']} | {r['precision']} | {_f(r['seconds'])} | {_f(r['cpu_seconds'])} | {r['samples']} | {_f(sps, '{:.0f}')} | "
            f"{_f(r['vs_plain'], '{:.3f}')} | {_f(r['vs_plain_cpu'], '{:.3f}')} | {_f(r['speedup_vs_notebook'])} | {r['n']} |"
        )
    L += [
        "",
        "**Full notebook pipeline** (reference SFT 2 epochs → mine the reference's mistakes on the noisy training images → "
        "DPO 5 epochs → test), timed from interpreter start to the end of the test: imports, data and noise, training, "
        "checkpoints, figures, test on both views (prefalign: of policy and reference; neither fit validates, as in the notebook: `configs/seed_dpo.yaml` runs its reference fit with `reference_recipe_args: [--trainer.limit_val_batches=0]` and itself with `NoValidationInFit`):",
        "",
        "| contender | precision | wall s | CPU s | speed-up vs notebook (wall) | (CPU) | vs plain | test acc noisy | test acc clean | reference acc noisy | pairs | peak RSS MB | n |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in report["pipelines"]:
        a = x["acc"]
        L.append(
            f"| {x['contender']} | {x['precision']} | {_f(x['seconds'], '{:.1f}')} | {_f(x['cpu_seconds'], '{:.1f}')} | {_f(x['speedup_vs_notebook'])} | "
            f"{_f(x['speedup_vs_notebook_cpu'])} | {_f(x['vs_plain'], '{:.2f}')} | {_f(a.get('policy_noisy'), '{:.4f}')} | {_f(a.get('policy_clean'), '{:.4f}')} | "
            f"{_f(a.get('reference_noisy'), '{:.4f}')} | {x['counts'].get('pairs', '–')} | {x['rss_mb']:.0f} | {x['n']} |"
        )
    L += [
        "",
        "Where the pipeline's wall time goes (medians in seconds; *data + noise* per process, *val* per validation run, *figures* per logging call, epochs per epoch):",
        "",
        "| contender | precision | data + noise | SFT epoch | mining | DPO epoch | val | figures | test |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in report["pipelines"]:
        ph = x["phases"]
        L.append(
            f"| {x['contender']} | {x['precision']} | "
            + " | ".join(_f(ph.get(k)) for k in ("data", "sft_epoch", "mine", "dpo_epoch", "val", "figures", "test"))
            + " |"
        )
    L += ["", "Targets:", "", "| target | measured | met |", "|---|---|---|"]
    for t in report["targets"]:
        L.append(f"| {t['target']} | {t['measured']} | {'yes' if t['ok'] else '**no**'} |")
    L += [
        "",
        "What ran: (a) the DPO-on-noisy-MNIST notebook's code as written (DataLoader over TensorDataset, batch 64, its DPODataset "
        "with `__getitem__`, reference re-run every DPO step, tqdm, `loss.item()` every step, fp32); its data are read from "
        "prefalign's MNIST cache instead of tf.keras, its noise is seeded, and nothing is plotted. (b) a minimal plain-PyTorch "
        "loop doing prefalign's work on prefalign's tensors (index-slice batches, same permutations, cached reference "
        "log-probs, no validation). (c) `prefalign.cli.main` with `configs/sft.yaml` then `configs/seed_dpo.yaml` "
        "(+ `configs/trainer/bf16.yaml` for bf16), only `--trainer.enable_progress_bar=false` and `--wandb=false` added"
        + (" and, in quick mode, `--model.log_figures=false`" if report["quick"] else "")
        + "; the reference recipe runs as its own CLI call in the same process (what `fit --config configs/seed_dpo.yaml` "
        "does when the reference is missing) so the bf16 overlay applies to it too. Each measurement is its own "
        "subprocess (own peak RSS). "
        + (
            "The recomputed-reference rows are separate `seed_dpo` runs with "
            "`--model.recompute_reference=true` on the reference and pairs of the same repeat's pipeline"
            + (f", {report['dpo_only_batches']} training batches each" if report.get("dpo_only_batches") else "")
            + ". "
            if any(r["spec"]["task"] == "dpo_recompute" for r in report.get("raw", []))
            else ""
        )
        + (
            "To keep the full benchmark near 25 minutes the plain loop runs 1 SFT epoch, mining and 2 DPO epochs per repeat "
            "(enough for its epoch rows), so it has no pipeline row (`--full-plain` runs its whole pipeline). "
            if report.get("plain_short") and any(r["spec"]["contender"] == "plain" for r in report.get("raw", []))
            else ""
        )
        + ("Only the measurements named by `--only` ran. " if "--only" in report.get("command", "") else "")
        + (
            f"The fp32 pipelines of prefalign and {PARTNERS[report.get('paired_with') or 'notebook']} ran side by side "
            "(`--concurrent`), each pinned to its own core, the cores swapped every repeat, so that both saw the same "
            "machine: this host's speed drifted by up to 2x within minutes, which a ratio of runs made minutes apart "
            "would have measured instead. "
            if report.get("concurrent")
            else ""
        )
        + "Per-epoch rows of the notebook and prefalign come from their pipeline runs. prefalign's CLI sets fixed glibc "
        "malloc thresholds (`prefalign.process_tuning.keep_freed_memory`: otherwise every training step page-faults ~28 MB of "
        "activation buffers back in); the plain loop gets the same setting"
        + (" (it did not in this run: `--plain-default-malloc`)" if report.get("plain_default_malloc") else "")
        + ", the notebook as written does not."
        + (f" Merged report: {report['merged']}." if report.get("merged") else ""),
    ]
    return "\n".join(L) + "\n"


def merge_reports(base_path: str, override_path: str, out: Path) -> int:
    base, over = json.loads(Path(base_path).read_text()), json.loads(Path(override_path).read_text())
    names = {r["spec"]["name"] for r in over["raw"]}
    raw = [r for r in base["raw"] if r["spec"]["name"] not in names] + over["raw"]
    precisions = sorted({r["spec"]["precision"] for r in raw}, key=["fp32", "bf16"].index)
    s = summarise(raw)
    rows, pipes = build_rows(s, precisions)
    report = {
        **base,
        "raw": raw,
        "summary": s,
        "rows": rows,
        "pipelines": pipes,
        # side-by-side pairs (--concurrent) come with the run that made them
        "concurrent": bool(over.get("concurrent") or base.get("concurrent")),
        "paired_with": over.get("paired_with") or base.get("paired_with"),
        "paired_ratios": over.get("paired_ratios") or base.get("paired_ratios") or [],
        "targets": targets(rows, pipes, precisions, over.get("paired_ratios") or base.get("paired_ratios")),
        "plain_default_malloc": any(r["spec"]["contender"] == "plain" and not r["spec"].get("mallopt") for r in raw),
        "merged": f"`{base['command']}` ({base['date']}, load {base['load_start']} → {base['load_end']}), with "
        f"{', '.join(sorted(names))} from `{over['command']}` ({over['date']}, load {over['load_start']} → {over['load_end']})",
    }
    return write_report(report, out)


def write_report(report: dict, out: Path) -> int:
    """Write ``latest.json`` and ``latest.md`` under ``out`` and print the markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=1, default=str))
    md = markdown(report)
    (out / "latest.md").write_text(md)
    print(md)
    return 0
