"""Contender (a) of scripts/bench.py: the DPO-on-noisy-MNIST notebook's sections 1-6 as written, run by ``bench_worker.py``.

Kept apart from the other workers because it is a transcript, not our code: ``DataLoader`` over ``TensorDataset``,
the notebook's ``DPODataset`` with per-sample ``__getitem__``, the reference re-run on every DPO step, tqdm and
``loss.item()`` per step, fp32. Only the data source (prefalign's MNIST cache instead of ``tf.keras``), seeded noise and
no plotting differ.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from bench_worker import REPO, T_START, _add, _Clock, _set_threads


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
    root = os.environ.get("PREFALIGN_DATA_DIR") or str(
        Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prefalign" / "mnist"
    )
    out = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = Path(root, f"{prefix}-images-idx3-ubyte").read_bytes()
        labels = Path(root, f"{prefix}-labels-idx1-ubyte").read_bytes()
        out[f"{split}_images"] = np.frombuffer(images, dtype=np.uint8, offset=16).reshape(-1, 28, 28)
        out[f"{split}_labels"] = np.frombuffer(labels, dtype=np.uint8, offset=8).astype(np.int64)
    return out


def worker_notebook(spec: dict) -> dict:
    """The DPO-on-noisy-MNIST notebook's sections 1-6, as written (fp32; CPU)."""
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
    (x_train, y_train), (x_test, y_test) = (
        (raw["train_images"], raw["train_labels"]),
        (raw["test_images"], raw["test_labels"]),
    )
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
            for inputs, labels in tqdm(loader, desc=f"Epoch {epoch + 1}/{epochs}"):
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                outputs = model(inputs)
                loss = criterion(outputs, labels)
                loss.backward()
                optimizer.step()
                running_loss += loss.item()
            print(f"Epoch {epoch + 1} Loss: {running_loss / len(loader):.4f}")
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
        logits = beta * (
            (policy_chosen_log_prob - ref_chosen_log_prob) - (policy_rejected_log_prob - ref_rejected_log_prob)
        )
        return -F.logsigmoid(logits).mean()

    optimizer = optim.Adam(policy_model.parameters(), lr=0.001)
    ref_model.eval()
    policy_model.train()
    for epoch in range(spec["dpo_epochs"]):
        t_epoch = _Clock()
        running_loss = 0.0
        for inputs, y_c, y_r in tqdm(dpo_loader, desc=f"DPO Epoch {epoch + 1}"):
            inputs, y_c, y_r = inputs.to(device), y_c.to(device), y_r.to(device)
            optimizer.zero_grad()
            policy_logits = policy_model(inputs)
            with torch.no_grad():
                ref_logits = ref_model(inputs)
            loss = dpo_loss(policy_logits, ref_logits, y_c, y_r)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
        print(f"Epoch {epoch + 1} DPO Loss: {running_loss / max(1, len(dpo_loader)):.4f}")
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
        "wall": wall,
        "cpu": cpu,
        "phases": phases,
        "counts": counts,
        "acc": {
            "policy_noisy": pol_noisy,
            "policy_clean": evaluate(policy_model, clean_loader),
            "reference_noisy": ref_noisy,
            "reference_clean": evaluate(ref_model, clean_loader),
        },
    }
