"""Files that would run ``touch <marker>`` if a loader trusted them: the marker existing afterwards means code ran."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import torch

FORMAT = "prefalign-weights/1"


class Touch:
    """Unpickling this runs ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def class_path_file(path: Path, marker: Path) -> Path:
    """Passes ``torch.load(weights_only=True)``; names ``os.system`` as its backbone class (the issue's file)."""
    torch.save(
        {
            "format": FORMAT,
            "class_path": "os.system",
            "init_args": {"command": f"touch {marker}"},
            "state_dict": {},
            "meta": {"noise_schedule": {}},
        },
        path,
    )
    return path


def lora_base_file(path: Path, marker: Path) -> Path:
    """An allowed class (LoRA) whose nested base names ``os.system``."""
    base = {"class_path": "os.system", "init_args": {"command": f"touch {marker}"}}
    torch.save(
        {
            "format": FORMAT,
            "class_path": "prefalign.models.LoRA",
            "init_args": {"base": base},
            "state_dict": {},
            "meta": {"noise_schedule": {}},
        },
        path,
    )
    return path


def plain_pickle(path: Path, marker: Path) -> Path:
    """``pickle.dump`` of an object whose unpickling runs the command (not a torch file at all)."""
    with open(path, "wb") as f:
        pickle.dump({"state_dict": {}, "hook": Touch(marker)}, f)
    return path


def torch_pickle(path: Path, marker: Path) -> Path:
    """``torch.save`` of the same object: a zip whose pickle names ``os.system``."""
    torch.save({"format": FORMAT, "state_dict": {}, "hook": Touch(marker)}, path)
    return path


EVIL_FILES = {
    "class_path": class_path_file,
    "lora_base": lora_base_file,
    "plain_pickle": plain_pickle,
    "torch_pickle": torch_pickle,
}
