"""Read an offline W&B run back from its ``run-<id>.wandb`` file (wandb 0.31 has no Python reader for it).

The file is W&B's transaction log in LevelDB's log format: a 7-byte header (``:W&B``, magic ``0xBEE1``,
version), then 32 KiB blocks of records, each with a 7-byte header (crc32, length, type: 1 full, 2 first,
3 middle, 4 last); a block tail shorter than a header is padding. Each full record is a ``wandb.proto``
``Record``. This is what ``wandb sync`` uploads, so reading it checks what the W&B server would receive.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32 * 1024
HEADER = struct.Struct("<4sHB")
RECORD = struct.Struct("<IHB")


def records(path: str | Path) -> Iterator[Any]:
    from wandb.proto import wandb_internal_pb2 as pb

    data = Path(path).read_bytes()
    ident, magic, _version = HEADER.unpack_from(data)
    assert ident == b":W&B" and magic == 0xBEE1, f"{path} is not a W&B transaction log"
    pos, pending = HEADER.size, b""
    while pos + RECORD.size <= len(data):
        left = BLOCK - pos % BLOCK
        if left < RECORD.size:
            pos += left
            continue
        _crc, length, kind = RECORD.unpack_from(data, pos)
        if kind == 0 and length == 0:  # zero padding up to the end of the block
            pos += left
            continue
        if pos + RECORD.size + length > len(data):  # a record still being written
            break
        pending += data[pos + RECORD.size : pos + RECORD.size + length]
        pos += RECORD.size + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def _key(item: Any) -> str:
    return item.key or "/".join(item.nested_key)


def read_run(path: str | Path) -> dict[str, Any]:
    """``{"config": {key: value}, "history": [{key: value}, ...], "summary": {...}, "exit_code": int | None}``."""
    out: dict[str, Any] = {"config": {}, "history": [], "summary": {}, "exit_code": None}
    for record in records(path):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out["config"].update({_key(u): json.loads(u.value_json) for u in record.run.config.update})
        elif kind == "config":
            out["config"].update({_key(u): json.loads(u.value_json) for u in record.config.update})
        elif kind == "history":
            out["history"].append({_key(i): json.loads(i.value_json) for i in record.history.item})
        elif kind == "summary":
            out["summary"].update({_key(u): json.loads(u.value_json) for u in record.summary.update})
        elif kind == "exit":
            out["exit_code"] = record.exit.exit_code
    return out
