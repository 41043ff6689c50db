"""Cache keys from digests: the same content gives the same key in any process, and any change gives another."""

from __future__ import annotations

import subprocess
import sys

import torch

from prefalign.digests import fingerprint, tensors_sha256


def _rows():
    return {
        "chosen_ids": torch.tensor([[1, 2, 3], [4, 5, 0]]),
        "chosen_completion": torch.tensor([[0, 1, 1], [0, 1, 0]]).bool(),
    }


def test_tensors_sha256_depends_on_content_names_dtypes_and_shapes_only():
    rows = _rows()
    assert tensors_sha256(rows) == tensors_sha256({k: v.clone() for k, v in reversed(list(rows.items()))})
    changed = _rows()
    changed["chosen_ids"][1, 2] = 7
    assert tensors_sha256(changed) != tensors_sha256(rows)
    assert tensors_sha256({**rows, "chosen_ids": rows["chosen_ids"].int()}) != tensors_sha256(rows)
    assert tensors_sha256({**rows, "chosen_ids": rows["chosen_ids"].reshape(3, 2)}) != tensors_sha256(rows)
    assert tensors_sha256({"other": rows["chosen_ids"]}) != tensors_sha256({"chosen_ids": rows["chosen_ids"]})


def test_the_key_is_the_same_in_another_process():
    code = (
        "import torch; from prefalign.digests import tensors_sha256; "
        "print(tensors_sha256({'chosen_ids': torch.tensor([[1, 2, 3], [4, 5, 0]]), "
        "'chosen_completion': torch.tensor([[0, 1, 1], [0, 1, 0]]).bool()}))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert other == tensors_sha256(_rows())
    assert fingerprint({"b": 1, "a": [other]}) == fingerprint({"a": [other], "b": 1})
