#!/usr/bin/env python
"""One measurement of scripts/bench.py, in its own process: ``python scripts/bench_worker.py SPEC.json OUT.json``.

The contenders' workers: (b) the plain PyTorch loop and (c) prefalign through its CLI live here; (a) the DPO-on-noisy-MNIST
notebook's code as written lives in ``bench_notebook.py``. ``T_START`` is taken before torch or Lightning is imported,
so a pipeline's wall time includes its imports, as a user's run does.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

T_START = time.perf_counter()  # before torch / lightning are imported: pipelines are timed from here
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

# ----------------------------------------------------------------------------------------------------------- helpers


class _Clock:
    """Wall time and this process's CPU time since construction. CPU time barely moves when other processes
    compete for the cores (this one is descheduled, not slowed), so it separates our cost from the machine's load."""

    def __init__(self) -> None:
        self.wall, self.cpu = time.perf_counter(), time.process_time()


def _add(phases: dict, key: str, clock: _Clock) -> None:
    phases.setdefault(key, []).append(time.perf_counter() - clock.wall)
    phases.setdefault(key + "@cpu", []).append(time.process_time() - clock.cpu)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _set_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------------------------------- (b) plain


def worker_plain(spec: dict) -> dict:
    """Minimal plain PyTorch doing prefalign's work: same tensors, index-slice batches, cached reference log-probs."""
    import copy

    import torch
    import torch.nn.functional as F

    from prefalign.data.datamodules import NoisyMNISTDataModule
    from prefalign.models import SeedCNN

    _set_threads(spec["threads"])
    # The same glibc thresholds prefalign's CLI sets (see prefalign.process_tuning.keep_freed_memory).
    if spec.get("mallopt"):
        from prefalign.process_tuning import keep_freed_memory

        keep_freed_memory()
    bf16 = spec["precision"] == "bf16"
    bs, eval_bs, seed = 64, 1000, 0
    phases: dict[str, list[float]] = {}
    counts: dict[str, int] = {}

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)

    def log_probs(model, x):
        with autocast():
            out = model(x)
        return F.log_softmax(out.float(), dim=1)

    @torch.no_grad()
    def full_log_probs(model, x):
        return torch.cat([log_probs(model, x[i : i + eval_bs]) for i in range(0, len(x), eval_bs)])

    def epochs(tensors: dict, n_epochs: int, step) -> None:
        n = len(next(iter(tensors.values())))
        for epoch in range(n_epochs):
            t = _Clock()
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
            for lo in range(0, n, bs):
                idx = order[lo : lo + bs]
                step({k: v[idx] for k, v in tensors.items()})
            _add(phases, spec["_phase"], t)

    t = _Clock()
    dm = NoisyMNISTDataModule(
        source=spec["source"], synthetic_size=tuple(spec["synthetic_size"]), val_size=spec["val_size"]
    )
    dm.setup("fit")
    train = dm.splits["train"]
    _add(phases, "data", t)

    torch.manual_seed(seed)
    model = SeedCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)  # as configs/sft.yaml

    def sft_step(b):
        loss = -log_probs(model, b["x"]).gather(1, b["y"].unsqueeze(1)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    spec["_phase"] = "sft_epoch"
    counts["sft_samples"] = len(train["y"])
    epochs({"x": train["x_clean"], "y": train["y"]}, spec["sft_epochs"], sft_step)

    t = _Clock()
    reference = model.eval().requires_grad_(False)
    logps = full_log_probs(reference, train["x_noisy"])
    rows = torch.nonzero(logps.argmax(1) != train["y"]).squeeze(1)
    pairs = {
        "x": train["x_noisy"][rows],
        "chosen": train["y"][rows],
        "rejected": logps.argmax(1)[rows],
        "ref": logps[rows],
    }
    _add(phases, "mine", t)
    counts["mine_samples"] = len(train["y"])
    counts["pairs"] = len(rows)

    policy = copy.deepcopy(reference).train().requires_grad_(True)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3, fused=True)  # as configs/seed_dpo.yaml
    beta = 0.1

    def dpo_step(b):
        lp = log_probs(policy, b["x"])
        ref = b["ref"]
        h = (lp.gather(1, b["chosen"][:, None]) - ref.gather(1, b["chosen"][:, None])) - (
            lp.gather(1, b["rejected"][:, None]) - ref.gather(1, b["rejected"][:, None])
        )
        loss = -F.logsigmoid(beta * h).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    spec["_phase"] = "dpo_epoch"
    epochs(pairs, spec["dpo_epochs"], dpo_step)

    t = _Clock()
    policy.eval()
    test = dm.splits["test"]
    acc = {}
    with torch.no_grad():
        for view in ("noisy", "clean"):
            acc[f"policy_{view}"] = (
                (full_log_probs(policy, test[f"x_{view}"]).argmax(1) == test["y"]).float().mean().item()
            )
    _add(phases, "test", t)
    wall, cpu = time.perf_counter() - T_START, time.process_time()
    return {"wall": wall, "cpu": cpu, "phases": phases, "counts": counts, "acc": acc}


# ----------------------------------------------------------------------------------------------------------- (c) prefalign


def _install_timers(record: dict) -> None:
    """Time every Trainer's epochs (a callback appended to each Trainer), mining, data setup and figures."""
    import functools

    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from prefalign.data import NoisyMNISTDataModule, PreferenceDataModule
    from prefalign.families.classifier.evaluation import ClassifierEvaluation

    class EpochTimer(Callback):
        def __init__(self):
            self.run = {"objective": None, "phases": {}, "samples": 0, "steps": 0}
            record["runs"].append(self.run)

        def on_fit_start(self, trainer, pl_module):
            self.run["objective"] = type(pl_module.objective).__name__

        def on_train_epoch_start(self, trainer, pl_module):
            self._t = _Clock()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.run["samples_seen"] = self.run.get("samples_seen", 0) + len(next(iter(batch.values())))
            if batch_idx + 1 == trainer.num_training_batches:
                _add(self.run["phases"], "train", self._t)
                self.run["steps"] = trainer.num_training_batches

        def on_train_epoch_end(self, trainer, pl_module):
            _add(self.run["phases"], "epoch", self._t)

        def on_validation_start(self, trainer, pl_module):
            self._tv = _Clock()

        def on_validation_end(self, trainer, pl_module):
            if not trainer.sanity_checking:
                _add(self.run["phases"], "val", self._tv)

        def on_test_start(self, trainer, pl_module):
            self._tt = _Clock()

        def on_test_end(self, trainer, pl_module):
            _add(self.run["phases"], "test", self._tt)

    init = L.Trainer.__init__

    @functools.wraps(init)
    def patched(self, *args, **kwargs):
        callbacks = list(kwargs.get("callbacks") or [])
        kwargs["callbacks"] = callbacks + [EpochTimer()]
        init(self, *args, **kwargs)

    L.Trainer.__init__ = patched

    def timed(cls, name, key):
        fn = getattr(cls, name)

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t = _Clock()
            try:
                return fn(*args, **kwargs)
            finally:
                _add(record["phases"], key, t)

        setattr(cls, name, wrapper)

    timed(NoisyMNISTDataModule, "setup", "data")  # PreferenceDataModule.setup's super().setup() lands here
    timed(PreferenceDataModule, "_mine", "mine")
    attach = PreferenceDataModule._attach

    def counting_attach(self, cached):
        attach(self, cached)
        record["mine_samples"] = int(self.mining_stats["mining/pool_size"])

    PreferenceDataModule._attach = counting_attach
    timed(ClassifierEvaluation, "_log_figures", "figures")


def worker_prefalign(spec: dict) -> dict:
    _set_threads(spec["threads"])
    import prefalign.cli as cli

    record: dict = {"runs": [], "phases": {}}
    _install_timers(record)
    work = Path(spec["workdir"])
    ref, pairs = str(work / "ref.pt"), str(work / "pairs")
    common = [
        "--trainer.enable_progress_bar=false",
        f"--data.init_args.source={spec['source']}",
        f"--data.init_args.synthetic_size={json.dumps(spec['synthetic_size'])}",
        f"--data.init_args.val_size={spec['val_size']}",
    ]
    # --bf16_fallback=false: a bf16 row measures bf16, also on a CPU without bf16 kernels (where it is slow).
    overlays = (
        ["--config", str(REPO / "configs/trainer/bf16.yaml"), "--bf16_fallback=false"]
        if spec["precision"] == "bf16"
        else []
    )
    overlays += ["--config", str(REPO / "configs/trainer/compile.yaml")] if spec.get("compile") else []
    overlays += spec.get("extra_args", [])
    overlays += ["--wandb=false"]  # the CSV logger only, as the plain loop logs nothing to a service

    def run(args: list[str]) -> None:
        if cli.main(args) != 0:  # main() reports known errors as an exit code, not an exception
            raise SystemExit(f"bench: prefalign {' '.join(args[:3])} failed; see the message above")

    def seed_dpo_config() -> dict:
        import yaml

        return yaml.safe_load((REPO / "configs/seed_dpo.yaml").read_text())

    if spec["task"] == "pipeline":
        # Exactly what `fit --config configs/seed_dpo.yaml` does when the reference is missing (cli._ensure_reference),
        # as two explicit CLI calls so that the precision overlay applies to the reference recipe as well.
        run(
            [
                "fit",
                "--config",
                str(REPO / "configs/sft.yaml"),
                *overlays,
                f"--model.export_path={ref}",
                "--test_after_fit=false",
                "--seed_everything=0",
                *common,
                *seed_dpo_config().get("reference_recipe_args", []),  # what the nested reference run adds last
            ]
        )
        run(
            [
                "fit",
                "--config",
                str(REPO / "configs/seed_dpo.yaml"),
                *overlays,
                f"--model.reference_ckpt={ref}",
                f"--data.init_args.cache_dir={pairs}",
                f"--reference_recipe={REPO / 'configs/sft.yaml'}",
                *common,
            ]
        )
    else:  # dpo epochs only, on the reference and pairs of an earlier pipeline run
        run(
            [
                "fit",
                "--config",
                str(REPO / "configs/seed_dpo.yaml"),
                *overlays,
                f"--model.reference_ckpt={spec['reference']}",
                f"--data.init_args.cache_dir={spec['pairs']}",
                f"--trainer.max_epochs={spec['dpo_epochs']}",
                "--test_after_fit=false",
                *(
                    [f"--trainer.limit_train_batches={spec['dpo_only_batches']}"]
                    if spec.get("dpo_only_batches")
                    else []
                ),
                f"--model.recompute_reference={str(spec['recompute']).lower()}",
                *common,
            ]
        )
    wall, cpu = time.perf_counter() - T_START, time.process_time()
    phases = dict(record["phases"])
    counts: dict = {}
    for run in record["runs"]:
        kind = {"SFT": "sft", "DPO": "dpo"}.get(run["objective"])
        if kind is None:
            continue
        skip = 1 if spec.get("drop_first_epoch") else 0  # compile runs: the first epoch includes compilation
        for name, key in (
            ("train", f"{kind}_epoch"),
            ("epoch", f"{kind}_epoch_with_val"),
            ("val", "val"),
            ("test", "test"),
        ):
            for suffix in ("", "@cpu"):
                values = run["phases"].get(name + suffix, [])
                phases.setdefault(key + suffix, []).extend(values[skip:] if name in ("train", "epoch") else values)
        if run["phases"].get("train"):
            counts[f"{kind}_samples"] = run.get("samples_seen", 0) // len(run["phases"]["train"])
            counts[f"{kind}_steps"] = run["steps"]
    if "mine_samples" in record:
        counts["mine_samples"] = record["mine_samples"]
    if "dpo_samples" in counts:
        counts["pairs"] = counts["dpo_samples"]
    acc = {}
    results = sorted(work.glob("runs/seed_dpo/*/results_test.json"))
    if results:
        m = json.loads(results[-1].read_text())["metrics"]
        acc = {
            "policy_noisy": m.get("test/acc_noisy"),
            "policy_clean": m.get("test/acc_clean"),
            "reference_noisy": m.get("test/reference/acc_noisy"),
            "reference_clean": m.get("test/reference/acc_clean"),
        }
    return {"wall": wall, "cpu": cpu, "phases": phases, "counts": counts, "acc": acc}


def worker_main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    load0 = _load()
    if spec["contender"] == "notebook":
        from bench_notebook import worker_notebook

        result = worker_notebook(spec)
    else:
        result = {"plain": worker_plain, "prefalign": worker_prefalign}[spec["contender"]](spec)
    result.update(rss_mb=round(_rss_mb(), 1), load_start=load0, load_end=_load(), spec=spec)
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    sys.modules.setdefault(
        "bench_worker", sys.modules["__main__"]
    )  # bench_notebook's import sees this module, one T_START
    worker_main(*sys.argv[1:3])
