#!/usr/bin/env python
"""prefalign vs the seed-000 notebook vs a minimal plain-PyTorch loop, timed in one run on one machine.

    python scripts/bench.py                      # full: real MNIST, 3 repeats, fp32 and bf16 (~20-25 min on 2 cores)
    python scripts/bench.py --quick              # smoke: synthetic data, 1 repeat, fp32, seconds
    python scripts/bench.py --repeats 5 --precision bf16 --out benchmarks/

Contenders (each measurement runs in its own subprocess, so each gets its own peak RSS and a cold start):

* ``notebook`` (a) — the seed-000 notebook's loops as written: ``DataLoader`` over ``TensorDataset`` (batch 64),
  the notebook's ``DPODataset`` with per-sample ``__getitem__``, the reference re-run on every DPO step, tqdm,
  ``loss.item()`` per step, fp32, 60k training images. The only changes: data come from prefalign's MNIST cache
  instead of ``tf.keras``, the noise is seeded, and nothing is plotted.
* ``plain`` (b) — a minimal plain-PyTorch loop doing prefalign's work: the same tensors (prefalign's datamodule),
  index-slice batches with the same per-epoch permutation, the same SFT/DPO losses, cached reference log-probs.
* ``prefalign`` (c) — the real CLI (``prefalign.cli.main``) with the repo's configs (``configs/sft.yaml`` then
  ``configs/seed_dpo.yaml``, plus ``configs/trainer/bf16.yaml`` for bf16), only ``trainer.enable_progress_bar=false``
  added. A callback injected into every Trainer times each epoch; validation, test, mining and figure
  logging are timed separately.

All contenders run with the same intra-op thread count (``--threads``, default 1, set with ``torch.set_num_threads``
and ``OMP_NUM_THREADS`` before torch is imported): on a shared 2-core box two OpenMP threads spin-wait whenever
another process holds a core and get many times slower, while one thread degrades gracefully.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

T_START = time.perf_counter()  # before torch / lightning are imported: pipelines are timed from here
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_report beside this file, also when loaded by path
from bench_report import build_rows, markdown, merge_reports, summarise, targets, write_report  # noqa: E402,F401

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


def _notebook_data(spec: dict) -> dict:
    """uint8 images / int64 labels as numpy arrays, read the way ``tf.keras.datasets.mnist.load_data`` would: straight
    from the files, without importing prefalign (whose datamodules import Lightning)."""
    import importlib.util

    import numpy as np

    if spec["source"] == "synthetic":
        mod_spec = importlib.util.spec_from_file_location("_pa_synthetic", REPO / "prefalign/data/synthetic.py")
        mod = importlib.util.module_from_spec(mod_spec)
        mod_spec.loader.exec_module(mod)  # torch only
        return {k: v.numpy() for k, v in mod.synthetic_digits(*spec["synthetic_size"], seed=0).items()}
    root = os.environ.get("PREFALIGN_DATA_DIR") or str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prefalign" / "mnist")
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = Path(root, f"{prefix}-images-idx3-ubyte").read_bytes()
        labels = Path(root, f"{prefix}-labels-idx1-ubyte").read_bytes()
        out[f"{split}_images"] = np.frombuffer(images, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
        out[f"{split}_labels"] = np.frombuffer(labels, dtype=np.uint8, offset=8).astype(np.int64)
    return out


# ----------------------------------------------------------------------------------------------------------- (a) notebook


def worker_notebook(spec: dict) -> dict:
    """The seed-000 notebook's sections 1-6, as written (fp32; CPU)."""
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import torch.optim as optim
    from torch.utils.data import DataLoader, Dataset, TensorDataset
    from tqdm.auto import tqdm

    _set_threads(spec["threads"])
    torch.manual_seed(0)
    np.random.seed(0)  # the notebook's noise is unseeded; seeded here for repeatability
    device = torch.device("cpu")
    phases: dict[str, list[float]] = {}
    counts: dict[str, int] = {}

    t = _Clock()
    raw = _notebook_data(spec)
    (x_train, y_train), (x_test, y_test) = (raw["train_images"], raw["train_labels"]), (raw["test_images"], raw["test_labels"])
    x_train = x_train.astype("float32") / 255.0
    x_test = x_test.astype("float32") / 255.0
    noise_factor = 0.5
    aug_mnist_noise = x_train + noise_factor * np.random.normal(loc=0.0, scale=1.0, size=x_train.shape)
    aug_mnist_noise_test = x_test + noise_factor * np.random.normal(loc=0.0, scale=1.0, size=x_test.shape)
    aug_mnist_noise = np.clip(aug_mnist_noise, 0.0, 1.0)
    aug_mnist_noise_test = np.clip(aug_mnist_noise_test, 0.0, 1.0)
    aug_labels = y_train
    aug_test_labels = y_test
    _add(phases, "data", t)

    class PyTorchRefModel(nn.Module):
        def __init__(self):
            super(PyTorchRefModel, self).__init__()
            self.conv1 = nn.Conv2d(1, 64, kernel_size=3, padding=1)
            self.relu1 = nn.ReLU()
            self.flatten = nn.Flatten()
            self.fc = nn.Linear(64 * 28 * 28, 10)

        def forward(self, x):
            x = self.relu1(self.conv1(x))
            x = self.flatten(x)
            x = self.fc(x)
            return x

    ref_model = PyTorchRefModel().to(device)
    x_train_tensor = torch.tensor(x_train).unsqueeze(1).float()
    y_train_tensor = torch.tensor(y_train).long()
    train_loader = DataLoader(TensorDataset(x_train_tensor, y_train_tensor), batch_size=64, shuffle=True)
    x_test_tensor = torch.tensor(x_test).unsqueeze(1).float()
    y_test_tensor = torch.tensor(y_test).long()
    counts["sft_samples"] = len(x_train_tensor)

    def train_model(model, loader, epochs=2):
        criterion = nn.CrossEntropyLoss()
        optimizer = optim.Adam(model.parameters(), lr=0.001)
        model.train()
        for epoch in range(epochs):
            t_epoch = _Clock()
            running_loss = 0.0
            for inputs, labels in tqdm(loader, desc=f"Epoch {epoch+1}/{epochs}"):
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                outputs = model(inputs)
                loss = criterion(outputs, labels)
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
            print(f"Epoch {epoch+1} Loss: {running_loss/len(loader):.4f}")
            _add(phases, "sft_epoch", t_epoch)

    train_model(ref_model, train_loader, epochs=spec["sft_epochs"])

    # 4. Manufacturing preferences
    t = _Clock()
    aug_images = aug_mnist_noise
    aug_tensor = torch.tensor(aug_images).unsqueeze(1).float()
    aug_labels_tensor = torch.tensor(aug_labels).long()
    aug_loader = DataLoader(TensorDataset(aug_tensor, aug_labels_tensor), batch_size=64, shuffle=False)
    ref_model.eval()
    all_preds = []
    with torch.no_grad():
        for inputs, _ in aug_loader:
            inputs = inputs.to(device)
            outputs = ref_model(inputs)
            _, predicted = torch.max(outputs, 1)
            all_preds.extend(predicted.cpu().numpy())
    all_preds = np.array(all_preds)
    incorrect_mask = all_preds != aug_labels
    dpo_images = aug_tensor[incorrect_mask]
    dpo_y_plus = aug_labels_tensor[incorrect_mask]
    dpo_y_minus = torch.tensor(all_preds[incorrect_mask]).long()
    _add(phases, "mine", t)
    counts["mine_samples"] = len(aug_tensor)
    counts["pairs"] = len(dpo_images)

    # 5. DPO
    class DPODataset(Dataset):
        def __init__(self, images, y_plus, y_minus):
            self.images = images
            self.y_plus = y_plus
            self.y_minus = y_minus

        def __len__(self):
            return len(self.images)

        def __getitem__(self, idx):
            return self.images[idx], self.y_plus[idx], self.y_minus[idx]

    dpo_loader = DataLoader(DPODataset(dpo_images, dpo_y_plus, dpo_y_minus), batch_size=64, shuffle=True)
    policy_model = PyTorchRefModel().to(device)
    policy_model.load_state_dict(ref_model.state_dict())

    def dpo_loss(policy_logits, ref_logits, y_chosen, y_rejected, beta=0.1):
        policy_log_probs = F.log_softmax(policy_logits, dim=1)
        ref_log_probs = F.log_softmax(ref_logits, dim=1)
        policy_chosen_log_prob = policy_log_probs.gather(1, y_chosen.unsqueeze(1)).squeeze()
        policy_rejected_log_prob = policy_log_probs.gather(1, y_rejected.unsqueeze(1)).squeeze()
        ref_chosen_log_prob = ref_log_probs.gather(1, y_chosen.unsqueeze(1)).squeeze()
        ref_rejected_log_prob = ref_log_probs.gather(1, y_rejected.unsqueeze(1)).squeeze()
        logits = beta * ((policy_chosen_log_prob - ref_chosen_log_prob) - (policy_rejected_log_prob - ref_rejected_log_prob))
        return -F.logsigmoid(logits).mean()

    optimizer = optim.Adam(policy_model.parameters(), lr=0.001)
    ref_model.eval()
    policy_model.train()
    for epoch in range(spec["dpo_epochs"]):
        t_epoch = _Clock()
        running_loss = 0.0
        for inputs, y_c, y_r in tqdm(dpo_loader, desc=f"DPO Epoch {epoch+1}"):
            inputs, y_c, y_r = inputs.to(device), y_c.to(device), y_r.to(device)
            optimizer.zero_grad()
            policy_logits = policy_model(inputs)
            with torch.no_grad():
                ref_logits = ref_model(inputs)
            loss = dpo_loss(policy_logits, ref_logits, y_c, y_r)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        print(f"Epoch {epoch+1} DPO Loss: {running_loss/max(1, len(dpo_loader)):.4f}")
        _add(phases, "dpo_epoch", t_epoch)

    # 6. Results
    def evaluate(model, loader, name="Model"):
        model.eval()
        correct = 0
        total = 0
        with torch.no_grad():
            for inputs, labels in loader:
                inputs, labels = inputs.to(device), labels.to(device)
                outputs = model(inputs)
                _, predicted = torch.max(outputs, 1)
                total += labels.size(0)
                correct += (predicted == labels).sum().item()
        acc = correct / total
        print(f"{name} Accuracy on Noisy Test Data: {acc:.4f}")
        return acc

    t = _Clock()
    aug_test_tensor = torch.tensor(aug_mnist_noise_test).unsqueeze(1).float()
    aug_test_labels_tensor = torch.tensor(aug_test_labels).long()
    aug_test_loader = DataLoader(TensorDataset(aug_test_tensor, aug_test_labels_tensor), batch_size=64, shuffle=False)
    ref_noisy = evaluate(ref_model, aug_test_loader, "Reference Model (Baseline)")
    pol_noisy = evaluate(policy_model, aug_test_loader, "Policy Model (DPO Trained)")
    _add(phases, "test", t)
    wall, cpu = time.perf_counter() - T_START, time.process_time()
    # Not part of the notebook (untimed): clean test accuracy, for the accuracy columns.
    clean_loader = DataLoader(TensorDataset(x_test_tensor, y_test_tensor), batch_size=1000)
    return {
        "wall": wall, "cpu": cpu, "phases": phases, "counts": counts,
        "acc": {"policy_noisy": pol_noisy, "policy_clean": evaluate(policy_model, clean_loader),
                "reference_noisy": ref_noisy, "reference_clean": evaluate(ref_model, clean_loader)},
    }


# ----------------------------------------------------------------------------------------------------------- (b) plain


def worker_plain(spec: dict) -> dict:
    """Minimal plain PyTorch doing prefalign's work: same tensors, index-slice batches, cached reference log-probs."""
    import copy

    import torch
    import torch.nn.functional as F

    from prefalign.data.datamodules import NoisyMNISTDataModule
    from prefalign.models import SeedCNN

    _set_threads(spec["threads"])
    if spec.get("mallopt"):  # the same glibc thresholds prefalign's CLI sets (see prefalign.cli._keep_freed_memory)
        from prefalign.cli import _keep_freed_memory

        _keep_freed_memory()
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
    dm = NoisyMNISTDataModule(source=spec["source"], synthetic_size=tuple(spec["synthetic_size"]), val_size=spec["val_size"])
    dm.setup("fit")
    train = dm.splits["train"]
    _add(phases, "data", t)

    torch.manual_seed(seed)
    model = SeedCNN()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

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
    pairs = {"x": train["x_noisy"][rows], "chosen": train["y"][rows], "rejected": logps.argmax(1)[rows], "ref": logps[rows]}
    _add(phases, "mine", t)
    counts["mine_samples"] = len(train["y"])
    counts["pairs"] = len(rows)

    policy = copy.deepcopy(reference).train().requires_grad_(True)
    opt = torch.optim.Adam(policy.parameters(), lr=1e-3)
    beta = 0.1

    def dpo_step(b):
        lp = log_probs(policy, b["x"])
        ref = b["ref"]
        h = (lp.gather(1, b["chosen"][:, None]) - ref.gather(1, b["chosen"][:, None])) - (
            lp.gather(1, b["rejected"][:, None]) - ref.gather(1, b["rejected"][:, None]))
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
            acc[f"policy_{view}"] = (full_log_probs(policy, test[f"x_{view}"]).argmax(1) == test["y"]).float().mean().item()
    _add(phases, "test", t)
    wall, cpu = time.perf_counter() - T_START, time.process_time()
    return {"wall": wall, "cpu": cpu, "phases": phases, "counts": counts, "acc": acc}


# ----------------------------------------------------------------------------------------------------------- (c) prefalign


def _install_timers(record: dict) -> None:
    """Time every Trainer's epochs (a callback appended to each Trainer), mining, data setup and figures."""
    import functools

    import lightning as L
    from lightning.pytorch.callbacks import Callback

    from prefalign.data.datamodules import NoisyMNISTDataModule, PreferenceDataModule
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
    common = ["--trainer.enable_progress_bar=false", f"--data.init_args.source={spec['source']}",
              f"--data.init_args.synthetic_size={json.dumps(spec['synthetic_size'])}", f"--data.init_args.val_size={spec['val_size']}"]
    # --bf16_fallback=false: a bf16 row measures bf16, also on a CPU without bf16 kernels (where it is slow).
    overlays = ["--config", str(REPO / "configs/trainer/bf16.yaml"), "--bf16_fallback=false"] if spec["precision"] == "bf16" else []
    overlays += ["--config", str(REPO / "configs/trainer/compile.yaml")] if spec.get("compile") else []
    overlays += spec.get("extra_args", [])
    overlays += ["--wandb=false"]  # the CSV logger only, as the plain loop logs nothing to a service

    def run(args: list[str]) -> None:
        if cli.main(args) != 0:  # main() reports known errors as an exit code, not an exception
            raise SystemExit(f"bench: prefalign {' '.join(args[:3])} failed; see the message above")

    if spec["task"] == "pipeline":
        # Exactly what `fit --config configs/seed_dpo.yaml` does when the reference is missing (cli._ensure_reference),
        # as two explicit CLI calls so that the precision overlay applies to the reference recipe as well.
        run(["fit", "--config", str(REPO / "configs/sft.yaml"), *overlays, f"--model.export_path={ref}",
                  "--test_after_fit=false", "--seed_everything=0", *common])
        run(["fit", "--config", str(REPO / "configs/seed_dpo.yaml"), *overlays, f"--model.reference_ckpt={ref}",
                  f"--data.init_args.cache_dir={pairs}", f"--reference_recipe={REPO / 'configs/sft.yaml'}", *common])
    else:  # dpo epochs only, on the reference and pairs of an earlier pipeline run
        run(["fit", "--config", str(REPO / "configs/seed_dpo.yaml"), *overlays, f"--model.reference_ckpt={spec['reference']}",
                  f"--data.init_args.cache_dir={spec['pairs']}", f"--trainer.max_epochs={spec['dpo_epochs']}", "--test_after_fit=false",
                  *([f"--trainer.limit_train_batches={spec['dpo_only_batches']}"] if spec.get("dpo_only_batches") else []),
                  f"--model.recompute_reference={str(spec['recompute']).lower()}", *common])
    wall, cpu = time.perf_counter() - T_START, time.process_time()
    phases = dict(record["phases"])
    counts: dict = {}
    for run in record["runs"]:
        kind = {"SFT": "sft", "DPO": "dpo"}.get(run["objective"])
        if kind is None:
            continue
        skip = 1 if spec.get("drop_first_epoch") else 0  # compile runs: the first epoch includes compilation
        for name, key in (("train", f"{kind}_epoch"), ("epoch", f"{kind}_epoch_with_val"), ("val", "val"), ("test", "test")):
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
        acc = {"policy_noisy": m.get("test/acc_noisy"), "policy_clean": m.get("test/acc_clean"),
               "reference_noisy": m.get("test/reference/acc_noisy"), "reference_clean": m.get("test/reference/acc_clean")}
    return {"wall": wall, "cpu": cpu, "phases": phases, "counts": counts, "acc": acc}


WORKERS = {"notebook": worker_notebook, "plain": worker_plain, "prefalign": worker_prefalign}


def worker_main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    load0 = _load()
    result = WORKERS[spec["contender"]](spec)
    result.update(rss_mb=round(_rss_mb(), 1), load_start=load0, load_end=_load(), spec=spec)
    Path(out_path).write_text(json.dumps(result))


# ----------------------------------------------------------------------------------------------------------- parent


def machine_info(threads: int) -> dict:
    import torch

    flags = set()
    model = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags") and not flags:
                flags = set(line.split(":", 1)[1].split())
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
    except OSError:
        pass
    import lightning

    return {
        "cpu": model, "cores": os.cpu_count(), "device": "cuda" if torch.cuda.is_available() else "cpu",
        "flags": {f: f in flags for f in ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8")},
        "torch": torch.__version__, "lightning": lightning.__version__, "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(), "threads": threads,
        "mkldnn": torch.backends.mkldnn.is_available(),
    }


def run_worker(spec: dict, tmp: Path, log) -> dict:
    tmp.mkdir(parents=True, exist_ok=True)
    spec_path, out_path = tmp / "spec.json", tmp / "result.json"
    spec_path.write_text(json.dumps(spec))
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]), MKL_NUM_THREADS=str(spec["threads"]),
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               WANDB_MODE="offline", PYTHONWARNINGS="ignore")
    t = _Clock()
    with open(tmp / "output.log", "w") as out:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_worker", str(spec_path), str(out_path)],
                              cwd=spec.get("workdir", tmp), env=env, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = (tmp / "output.log").read_text()[-3000:]
        raise RuntimeError(f"worker {spec['contender']}/{spec['task']} failed (exit {proc.returncode}):\n{tail}")
    result = json.loads(out_path.read_text())
    result["process_wall"] = time.perf_counter() - t.wall
    log(f"  {spec['name']:<28} {result['process_wall']:7.1f} s   rss {result['rss_mb']:6.0f} MB   load {result['load_start']} -> {result['load_end']}")
    return result


def wait_for_quiet(limit: float, max_wait: float, log) -> list[float]:
    waited = 0.0
    while os.getloadavg()[0] > limit and waited < max_wait:
        log(f"load average {_load()} > {limit}: waiting 60 s ({waited/60:.0f}/{max_wait/60:.0f} min)")
        time.sleep(60)
        waited += 60
    return _load()


def plan(args) -> list[dict]:
    """The measurements of one repeat, in run order (the prefalign pipeline first: the DPO-only runs reuse its reference)."""
    base = {"threads": args.threads, "source": "synthetic" if args.quick else "mnist",
            "synthetic_size": [600, 200], "val_size": 100 if args.quick else 5000, "sft_epochs": 2, "dpo_epochs": 5,
            "dpo_only_batches": None if args.quick else args.dpo_only_batches}
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    if args.quick:  # a smoke test: figures (matplotlib, ~1 s per call) would dominate the tiny runs
        base["extra_args"] = ["--model.log_figures=false"]
    specs = []
    for p in precisions:
        specs.append({**base, "name": f"prefalign pipeline {p}", "contender": "prefalign", "task": "pipeline", "precision": p})
    specs.append({**base, "name": "notebook pipeline fp32", "contender": "notebook", "task": "pipeline", "precision": "fp32"})
    for p in precisions:
        short = {} if (args.quick or args.full_plain) else {"sft_epochs": 1, "dpo_epochs": 2, "short": True}  # ~25 min budget
        specs.append({**base, "name": f"plain pipeline {p}", "contender": "plain", "task": "pipeline", "precision": p,
                      "mallopt": not args.plain_default_malloc, **short})
    for p in precisions:
        specs.append({**base, "name": f"prefalign dpo recompute {p}", "contender": "prefalign", "task": "dpo_recompute",
                      "precision": p, "recompute": True, "dpo_epochs": args.dpo_only_epochs})
    for p in precisions if args.compile else []:
        specs.append({**base, "name": f"prefalign dpo eager {p}", "contender": "prefalign", "task": "dpo_eager",
                      "precision": p, "recompute": False, "dpo_epochs": args.dpo_only_epochs + 1, "drop_first_epoch": True})
        specs.append({**base, "name": f"prefalign dpo compile {p}", "contender": "prefalign", "task": "dpo_compile",
                      "precision": p, "recompute": False, "compile": True, "dpo_epochs": args.dpo_only_epochs + 1, "drop_first_epoch": True})
    if args.only:
        specs = [s for s in specs if any(word in s["name"] for word in args.only)]
    return specs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="synthetic data (600/200 images), 1 repeat: a smoke test")
    ap.add_argument("--repeats", type=int, default=None, help="repeats of every measurement (default 3; 1 with --quick)")
    ap.add_argument("--precision", choices=["fp32", "bf16", "both"], default=None, help="default both (fp32 with --quick)")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads for every contender (default 1)")
    ap.add_argument("--dpo-only-epochs", type=int, default=1, help="epochs of the recompute-reference (and compile) DPO runs")
    ap.add_argument("--dpo-only-batches", type=int, default=150, help="training batches per epoch of those runs (full mode; 0 = all)")
    ap.add_argument("--full-plain", action="store_true", help="run the plain loop's full pipeline too (default in full mode: "
                    "1 SFT + 2 DPO epochs, for the epoch rows; saves ~4 min per repeat)")
    ap.add_argument("--plain-default-malloc", action="store_true", help="run the plain loop with glibc's default malloc "
                    "thresholds (by default it gets the same ones prefalign's CLI sets, so 'vs plain' measures the framework)")
    ap.add_argument("--compile", action="store_true", help="also time DPO runs with model.compile=true (compilation excluded from the epoch time)")
    ap.add_argument("--reference", help="reference weights + --pairs cache dir for the DPO-only runs (default: this repeat's prefalign pipeline's)")
    ap.add_argument("--pairs", help="mined-pairs cache folder matching --reference")
    ap.add_argument("--out", default=str(REPO / "benchmarks"), help="folder for latest.json / latest.md")
    ap.add_argument("--wait-load", type=float, default=None, help="wait until the 1-min load average is below this (default 1.5; off with --quick)")
    ap.add_argument("--max-wait", type=float, default=1200, help="give up waiting for a quiet machine after this many seconds")
    ap.add_argument("--only", nargs="+", help="run only the measurements whose name contains one of these words (development)")
    ap.add_argument("--merge", nargs=2, metavar=("BASE_JSON", "OVERRIDE_JSON"), help="write a report from BASE's raw results "
                    "with every measurement that OVERRIDE also has taken from OVERRIDE (e.g. a re-run of one contender)")
    ap.add_argument("--_worker", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        worker_main(*args._worker)
        return 0
    if args.merge:
        return merge_reports(*args.merge, Path(args.out))
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.precision = args.precision or ("fp32" if args.quick else "both")
    wait = args.wait_load if args.wait_load is not None else (None if args.quick else 1.5)
    command = "python scripts/bench.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    if wait:
        wait_for_quiet(wait, args.max_wait, log)
    load_start, t0 = _load(), time.perf_counter()
    log(f"bench: {'quick' if args.quick else 'full'}, {args.repeats} repeat(s), precision {args.precision}, {args.threads} thread(s); load {load_start}")
    scratch = Path(tempfile.mkdtemp(prefix="prefalign-bench-"))
    results = []
    try:
        for rep in range(args.repeats):
            log(f"repeat {rep + 1}/{args.repeats}")
            shared: dict = {"reference": args.reference, "pairs": args.pairs} if args.reference else {}
            for i, spec in enumerate(plan(args)):
                work = scratch / f"r{rep}-{i}"
                work.mkdir(parents=True)
                spec = {**spec, "workdir": str(work), "repeat": rep}
                if spec["task"] != "pipeline" and shared:
                    spec.update(reference=shared["reference"], pairs=shared["pairs"])
                r = run_worker(spec, work, log)
                if spec["contender"] == "prefalign" and spec["task"] == "pipeline" and "reference" not in shared:
                    shared = {"reference": str(work / "ref.pt"), "pairs": str(work / "pairs")}
                results.append(r)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    s = summarise(results)
    rows, pipes = build_rows(s, precisions)
    report = {"command": command, "quick": args.quick,
              "plain_default_malloc": args.plain_default_malloc, "plain_short": not (args.quick or args.full_plain),
              "dpo_only_batches": None if args.quick else args.dpo_only_batches, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "machine": machine_info(args.threads), "repeats": args.repeats, "load_start": load_start, "load_end": _load(),
              "bench_seconds": time.perf_counter() - t0, "rows": rows, "pipelines": pipes, "summary": s, "raw": results}
    report["targets"] = targets(rows, pipes, precisions)
    return write_report(report, Path(args.out))


if __name__ == "__main__":
    sys.exit(main())
