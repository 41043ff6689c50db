"""Run every bad input in CASES through `python -m prefalign` and write docs/bad_input.md's table of one-line messages.

    python scripts/bad_input_table.py                 # run every case, rewrite the table between the markers
    python scripts/bad_input_table.py --only sample   # run the cases whose title contains "sample"; print, write nothing
    python scripts/bad_input_table.py --check         # exit 1 if the page's rows are not CASES (titles and messages)

Each case runs as a subprocess in its own copy of a folder of test files (made here, see ``make_files``), so nothing
is downloaded and no case sees another's leftovers. A case passes when the command exits 2, prints exactly one
``error:`` line containing the expected text and no traceback, writes nothing new, and no malicious file's code ran
(the file ``PWNED`` never appears).

The cases are in ``scripts/bad_input_cases.py``. To add one, append it to CASES there, add any file it needs to
``make_files`` here, then run the script and commit the page.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bad_input_cases import CASES, MARKER, REPO, Case  # noqa: E402

PAGE = REPO / "docs" / "bad_input.md"
BEGIN, END = "<!-- bad-input-table:begin -->", "<!-- bad-input-table:end -->"


def make_files(folder: Path) -> Path:
    """The inputs the cases name: small real weights files, malicious files, prompts, a binary file, bad YAML."""
    import pickle

    import torch

    sys.path.insert(0, str(REPO))
    from prefalign.checkpoint import FORMAT, save_weights
    from prefalign.data.text import CharTokenizer
    from prefalign.models import ConditionalUNet, SeedCNN, TinyTransformer

    torch.manual_seed(0)
    lm = TinyTransformer(vocab_size=8, d_model=8, n_heads=1, n_layers=1, d_ff=8, block_size=8)
    lm.vocab.copy_(CharTokenizer("abc").to_codes(8))
    save_weights(lm, folder / "lm.pt")
    save_weights(
        ConditionalUNet(channels=(8,), time_dim=8, groups=4),
        folder / "den.pt",
        {"noise_schedule": {"num_timesteps": 10, "kind": "linear", "beta_start": 1e-4, "beta_end": 0.02}},
    )
    save_weights(SeedCNN(channels=4), folder / "cnn.pt")
    touch = {"command": f"touch {MARKER}"}
    torch.save(
        {
            "format": FORMAT,
            "class_path": "os.system",
            "init_args": touch,
            "state_dict": {},
            "meta": {"noise_schedule": {}},
        },
        folder / "evil.pt",
    )
    torch.save(
        {
            "format": FORMAT,
            "class_path": "prefalign.models.LoRA",
            "init_args": {"base": {"class_path": "os.system", "init_args": touch}},
            "state_dict": {},
            "meta": {},
        },
        folder / "evil_lora.pt",
    )
    (folder / "plain.pkl").write_bytes(_code_pickle())
    (folder / "torch_code.pt").write_bytes(_torch_code())
    (folder / "data.pkl").write_bytes(pickle.dumps({"state_dict": {}}, protocol=4))
    torch.save(
        {
            "pytorch-lightning_version": "2.0.0",
            "state_dict": {},
            "epoch": 0,
            "global_step": 0,
            "hyper_parameters": {"backbone": {"class_path": "torch.nn.Identity"}},
        },
        folder / "hparams.ckpt",
    )
    (folder / "prompts.txt").write_text("ab\n")
    (folder / "bin.txt").write_bytes(b"\xff\xfe\x00binary")
    (folder / "bad.yaml").write_text("ckpt: [unclosed\n  out: :\n")
    (folder / "o").mkdir()
    (folder / "corrupt.ckpt").write_bytes(bytes(range(256)) * 4)
    _hf_files(folder)
    return folder


def _hf_files(folder: Path) -> None:
    """A tiny local Llama (with and without a chat template) and TRL-format files, as the HF tests build them."""
    from tests.hf.tiny import STANDARD, conversational, make_model_dir, write_jsonl

    make_model_dir(folder / "llama")
    make_model_dir(folder / "llama_no_template", chat_template=False)
    write_jsonl(STANDARD * 2, folder / "prefs.jsonl")
    write_jsonl([STANDARD[0]], folder / "one.jsonl")  # "the cat sat on": a 4-token prompt
    write_jsonl(conversational(STANDARD), folder / "chat.jsonl")
    write_jsonl([{"question": "q", "answer": "a"}], folder / "qa.jsonl")
    write_jsonl([{"prompt": r["prompt"]} for r in STANDARD], folder / "prompts.jsonl")


def _code_pickle() -> bytes:
    """A pickle that runs ``touch PWNED`` when loaded, written by hand so that this script never unpickles one."""
    # PROTO 2, GLOBAL 'os system', the command string, TUPLE1, REDUCE, STOP.
    command = f"touch {MARKER}".encode()
    return b"\x80\x02cos\nsystem\nX" + len(command).to_bytes(4, "little") + command + b"\x85R."


def _torch_code() -> bytes:
    import io

    import torch

    class Code:
        def __reduce__(self):
            return (os.system, (f"touch {MARKER}",))

    buffer = io.BytesIO()
    torch.save({"state_dict": {}, "hook": Code()}, buffer)
    return buffer.getvalue()


@dataclass
class Result:
    case: Case
    code: int
    message: str
    problems: list[str]


def run_case(case: Case, files: Path) -> Result:
    """Run ``case`` in a fresh copy of ``files``; the message is its one ``error:`` line, the folder's path as ``.``."""
    with tempfile.TemporaryDirectory(prefix="bad-input-") as tmp:
        folder = Path(tmp) / "case"
        shutil.copytree(files, folder)
        before = sorted(p.relative_to(folder) for p in folder.rglob("*"))
        env = {k: v for k, v in os.environ.items() if k != "PREFALIGN_DEBUG"}
        env.update(PYTHONPATH=str(REPO), PREFALIGN_WANDB="0", WANDB_MODE="offline", OMP_NUM_THREADS="1")
        env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")  # never the hub
        done = subprocess.run(
            [sys.executable, "-m", "prefalign", *case.argv],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        after = sorted(p.relative_to(folder) for p in folder.rglob("*"))
        errors = [line for line in done.stderr.splitlines() if "error:" in line]
        message = " ".join(errors).replace(str(folder.resolve()), ".").replace(str(folder), ".")
        problems = []
        if done.returncode != 2:
            problems.append(f"exit code {done.returncode}, not 2")
        if len(errors) != 1:
            problems.append(f"{len(errors)} error lines")
        if "Traceback" in done.stderr:
            problems.append("a traceback")
        if case.expected not in message:
            problems.append(f"no {case.expected!r} in the message")
        if (folder / MARKER).exists():
            problems.append("THE FILE'S CODE RAN")
        if after != before:
            problems.append(f"wrote {sorted(set(map(str, after)) - set(map(str, before)))}")
        return Result(case, done.returncode, message, problems)


def table(results: list[Result]) -> str:
    rows = ["| Bad input | Command | Message (exit code 2) |", "| --- | --- | --- |"]
    for r in results:
        rows.append(f"| {_cell(r.case.title)} | `{_cell(command(r.case))}` | {_cell(r.message)} |")
    return "\n".join(rows)


def command(case: Case) -> str:
    """The case's arguments as the page shows them (paths in the repository relative to it)."""
    return " ".join(a if " " not in a else repr(a) for a in case.argv).replace(str(REPO) + "/", "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def page_rows(text: str) -> list[tuple[str, str, str]]:
    """(title, command, message) of each row of the page's table."""
    block = text.split(BEGIN, 1)[1].split(END, 1)[0]
    rows = [line for line in block.strip().splitlines()[2:] if line.startswith("| ")]
    cells = [[c.strip().replace("\\|", "|") for c in row.strip("|").split(" | ")] for row in rows]
    return [(c[0], c[1].strip("`"), c[-1]) for c in cells]


def out_of_date(text: str) -> list[str]:
    """What differs between the page and CASES: titles in order, each command, and each message containing its
    expected text. Empty when in sync."""
    rows = page_rows(text)
    if [t for t, _, _ in rows] != [c.title for c in CASES]:
        return ["the page's titles are not CASES' titles (run python scripts/bad_input_table.py)"]
    problems = [
        f"{c.title}: the page shows another command" for c, (_, cmd, _) in zip(CASES, rows) if cmd != command(c)
    ]
    return problems + [
        f"{c.title}: the page's message lacks {c.expected!r}"
        for c, (_, _, m) in zip(CASES, rows)
        if c.expected not in m
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only", help="run only the cases whose title contains this text; print, do not write the page"
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the page is out of date with CASES (runs nothing)"
    )
    args = parser.parse_args(argv)
    if args.check:
        problems = out_of_date(PAGE.read_text())
        print("\n".join(problems) or f"{PAGE.relative_to(REPO)} is in sync with {len(CASES)} cases")
        return 1 if problems else 0
    cases = [c for c in CASES if args.only is None or args.only in c.title]
    with tempfile.TemporaryDirectory(prefix="bad-input-files-") as tmp:
        files = make_files(Path(tmp))
        results = []
        for case in cases:
            results.append(run_case(case, files))
            status = "ok" if not results[-1].problems else "FAILED: " + "; ".join(results[-1].problems)
            print(f"{case.title}: {status}\n    {results[-1].message}", flush=True)
    failed = [r for r in results if r.problems]
    if args.only is None and not failed:
        text = PAGE.read_text()
        head, rest = text.split(BEGIN, 1)
        PAGE.write_text(head + BEGIN + "\n" + table(results) + "\n" + END + rest.split(END, 1)[1])
        print(f"wrote {len(results)} rows to {PAGE.relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
