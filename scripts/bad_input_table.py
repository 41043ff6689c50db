"""Run every bad input in CASES through `python -m prefalign` and write docs/bad_input.md's table of one-line messages.

    python scripts/bad_input_table.py                 # run every case, rewrite the table between the markers
    python scripts/bad_input_table.py --only sample   # run the cases whose title contains "sample"; print, write nothing
    python scripts/bad_input_table.py --check         # exit 1 if the page's rows are not CASES (titles and messages)

Each case runs as a subprocess in its own copy of a folder of test files (made here, see ``make_files``), so nothing
is downloaded and no case sees another's leftovers. A case passes when the command exits 2, prints exactly one
``error:`` line containing the expected text and no traceback, writes nothing new, and no malicious file's code ran
(the file ``PWNED`` never appears).

To add a case, append ``Case(title, argv, expected)`` to CASES (argv relative to the folder; ``SEED_DPO`` is a fast
fit config on synthetic digits) and add any file it needs to ``make_files``; then run the script and commit the page.
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

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "bad_input.md"
BEGIN, END = "<!-- bad-input-table:begin -->", "<!-- bad-input-table:end -->"
MARKER = "PWNED"  # what the malicious files create if their code ever runs


@dataclass(frozen=True)
class Case:
    title: str
    argv: tuple[str, ...]
    expected: str  # a substring of the one-line message


SYNTHETIC = (
    "--data.init_args.source=synthetic",
    "--data.init_args.synthetic_size=[600, 200]",
    "--data.init_args.val_size=100",
)
SEED_DPO = (
    "--config",
    str(REPO / "configs" / "seed_dpo.yaml"),
    *SYNTHETIC,
    "--model.backbone.channels=4",
    "--model.log_figures=false",
)
HF = ("fit", "--config", str(REPO / "configs" / "hf_dpo.yaml"), "--trainer.max_steps=1", "--model_name_or_path")
GRPO = ("fit", "--config", str(REPO / "configs" / "hf_grpo.yaml"), "--trainer.max_steps=1", "--model_name_or_path")
GEN = ("generate", "--max_new_tokens", "2")  # + --ckpt lm.pt (a char LM), or a bad file
UNKNOWN = "which is not a known architecture, and nothing was imported"
CODE = "it holds pickled objects, code that would run when unpickled"

CASES: list[Case] = [
    # A weights file naming os.system (passes torch.load(weights_only=True)), and pickles that would run it.
    Case(
        "generate: weights file naming os.system",
        (*GEN, "--ckpt", "evil.pt", "--prompt", "ab", "--out", "x.jsonl"),
        UNKNOWN,
    ),
    Case("sample: weights file naming os.system", ("sample", "--ckpt", "evil.pt", "--out", "s.pt"), UNKNOWN),
    Case("dream: weights file naming os.system", ("dream", "--ckpt", "evil.pt", "--out_dir", "d"), UNKNOWN),
    Case(
        "dream: --compare_ckpt naming os.system",
        ("dream", "--ckpt", "cnn.pt", "--compare_ckpt", "evil.pt", "--out_dir", "d"),
        UNKNOWN,
    ),
    Case("fit: reference naming os.system", ("fit", *SEED_DPO, "--model.reference_ckpt=evil.pt"), UNKNOWN),
    Case("predict: reference naming os.system", ("predict", *SEED_DPO, "--model.reference_ckpt=evil.pt"), UNKNOWN),
    Case(
        "generate: LoRA whose base names os.system",
        (*GEN, "--ckpt", "evil_lora.pt", "--prompt", "ab", "--out", "x.jsonl"),
        UNKNOWN,
    ),
    Case("generate: plain pickle with code", (*GEN, "--ckpt", "plain.pkl", "--prompt", "ab", "--out", "x.jsonl"), CODE),
    Case("sample: torch.save of an object with code", ("sample", "--ckpt", "torch_code.pt", "--out", "s.pt"), CODE),
    Case("fit: reference is a plain pickle with code", ("fit", *SEED_DPO, "--model.reference_ckpt=plain.pkl"), CODE),
    Case(
        "test: --ckpt_path is a plain pickle with code",
        ("test", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--ckpt_path=plain.pkl"),
        CODE,
    ),
    Case(
        "test: --ckpt_path is a weights file",
        ("test", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--ckpt_path=cnn.pt"),
        "is a prefalign weights file, not a Lightning checkpoint: give it as --model.reference_ckpt",
    ),
    Case(
        "test: --ckpt_path with hyper_parameters",
        ("test", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--ckpt_path=hparams.ckpt"),
        "carries hyper_parameters naming classes to build",
    ),
    Case(
        "generate: plain pickle without code",
        (*GEN, "--ckpt", "data.pkl", "--prompt", "ab", "--out", "x.jsonl"),
        "is a plain Python pickle, not a PyTorch file",
    ),
    # Outputs: never a folder, never an input, never two outputs on one path, a folder that can be written.
    Case(
        "sample: --out is a .png", ("sample", "--ckpt", "den.pt", "--out", "o/samples.png"), "so --out cannot be a .png"
    ),
    Case(
        "sample: --out is the --ckpt",
        ("sample", "--ckpt", "den.pt", "--out", "den.pt"),
        "--out den.pt is the input --ckpt",
    ),
    Case("sample: --out is a folder", ("sample", "--ckpt", "den.pt", "--out", "o"), "--out o is a folder"),
    Case(
        "generate: --out is a folder", (*GEN, "--ckpt", "lm.pt", "--prompt", "ab", "--out", "o"), "--out o is a folder"
    ),
    Case(
        "generate: --out is the --ckpt",
        (*GEN, "--ckpt", "lm.pt", "--prompt", "ab", "--out", "lm.pt"),
        "--out lm.pt is the input --ckpt",
    ),
    Case(
        "generate: --out is the --prompts_file",
        (*GEN, "--ckpt", "lm.pt", "--prompts_file", "prompts.txt", "--out", "prompts.txt"),
        "is the input --prompts_file",
    ),
    Case(
        "generate: --out under /proc",
        (*GEN, "--ckpt", "lm.pt", "--prompt", "ab", "--out", "/proc/x.jsonl"),
        "--out: cannot write in /proc",
    ),
    Case(
        "dream: --out_dir is a file",
        ("dream", "--ckpt", "cnn.pt", "--out_dir", "prompts.txt"),
        "--out_dir prompts.txt is a file",
    ),
    Case(
        "dream: two --l2_values share file names",
        ("dream", "--ckpt", "cnn.pt", "--out_dir", "d", "--sweep_l2", "true", "--l2_values", "[0.1, 0.1000001]"),
        "would both be written to d/l2_0.1_grid.png",
    ),
    # fit: paths it will write, checked before a reference is trained, pairs are mined or a run folder is made.
    Case(
        "fit: --ckpt_path last with nothing to resume",
        ("fit", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--ckpt_path=last"),
        "--ckpt_path last: nothing to resume",
    ),
    Case(
        "fit: resume from a corrupt checkpoint",
        ("fit", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--ckpt_path=corrupt.ckpt"),
        "is not a readable PyTorch file",
    ),
    Case("fit: reference path is a folder", ("fit", *SEED_DPO, "--model.reference_ckpt=o"), "is a folder"),
    Case(
        "fit: reference to train under /proc",
        ("fit", *SEED_DPO, "--model.reference_ckpt=/proc/prefalign/reference.pt"),
        "cannot create files in /proc",
    ),
    Case(
        "fit: pair cache under /sys",
        ("fit", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--data.init_args.cache_dir=/sys/pairs"),
        "--data.init_args.cache_dir=/sys/pairs cannot be written",
    ),
    Case(
        "fit: pair cache under a file",
        ("fit", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--data.init_args.cache_dir=prompts.txt/pairs"),
        "is a file, not a folder",
    ),
    Case(
        "fit: logger folder under /proc",
        ("fit", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--trainer.logger.init_args.save_dir=/proc/runs"),
        "--trainer.logger.init_args.save_dir=/proc/runs cannot be written",
    ),
    Case(
        "fit: default_root_dir under /proc",
        (
            "fit",
            *SEED_DPO,
            "--model.reference_ckpt=cnn.pt",
            "--trainer.logger=false",
            "--trainer.default_root_dir=/proc/runs",
        ),
        "--trainer.default_root_dir=/proc/runs cannot be written",
    ),
    Case(
        "fit: export_path is a folder",
        ("fit", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--model.export_path=o"),
        "is a folder; give a file path",
    ),
    Case(
        "fit: reference of another architecture",
        ("fit", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--model.backbone.channels=8"),
        "but the configured backbone is",
    ),
    Case(
        "fit: an objective that does not exist",
        ("fit", *SEED_DPO, "--model.reference_ckpt=cnn.pt", "--model.objective=prefalign.objectives.NoSuchLoss"),
        "NoSuchLoss",
    ),
    Case("fit: --config is malformed YAML", ("fit", "--config", "bad.yaml"), "--config bad.yaml is not valid YAML"),
    # Hugging Face runs (configs/hf_dpo.yaml): the model, the data and its format, max_length.
    Case("hf: model not found", (*HF, "no_such_model", "--dataset_name", "prefs.jsonl"), "model not found: "),
    Case("hf: dataset not found", (*HF, "llama", "--dataset_name", "missing.jsonl"), "dataset not found: "),
    Case(
        "hf: columns of no TRL format",
        (*HF, "llama", "--dataset_name", "qa.jsonl"),
        "lacks the column(s) prompt, chosen, rejected (it has: answer, question); accepted TRL formats",
    ),
    Case(
        "hf: conversational data, no chat template",
        (*HF, "llama_no_template", "--dataset_name", "chat.jsonl"),
        "but the model's tokenizer has no chat template",
    ),
    Case(
        "hf: every prompt fills max_length",
        (*HF, "llama", "--dataset_name", "one.jsonl", "--data.init_args.max_length=3"),
        "is empty after truncation",
    ),
    Case(
        "hf: max_length shorter than any sequence",
        (*HF, "llama", "--dataset_name", "prefs.jsonl", "--data.init_args.max_length=1"),
        "max_length=1 is too short",
    ),
    # GRPO on Hugging Face models (configs/hf_grpo.yaml): prompt-only data, rewards, objective and data that disagree.
    Case("hf grpo: no prompt column", (*GRPO, "llama", "--dataset_name", "qa.jsonl"), "lacks the column prompt"),
    Case(
        "hf grpo: reward model not found",
        (
            *GRPO,
            "llama",
            "--dataset_name",
            "prompts.jsonl",
            "--model.objective.init_args.reward.init_args.reward_funcs="
            '[{"class_path": "prefalign.families.hf.RewardModel", "init_args": {"model_name_or_path": "no_such_rm"}}]',
        ),
        "reward model not found: ",
    ),
    Case(
        "hf grpo: a preference objective on prompts",
        (*GRPO, "llama", "--dataset_name", "prompts.jsonl", "--model.objective=prefalign.objectives.DPO"),
        "holds prompts only",
    ),
    Case(
        "hf: PPO-lite on preference data",
        (*HF, "llama", "--dataset_name", "prefs.jsonl", "--model.objective=prefalign.objectives.PPOLite"),
        "PPO-lite on a Hugging Face model samples from prompts",
    ),
    # Options and input files of the extra commands.
    Case(
        "generate: --top_k 0",
        (*GEN, "--ckpt", "lm.pt", "--prompt", "ab", "--top_k", "0", "--out", "x.jsonl"),
        "--top_k=0 must be ≥ 1",
    ),
    Case(
        "generate: --device cuda without a GPU",
        (*GEN, "--ckpt", "lm.pt", "--prompt", "ab", "--device", "cuda", "--out", "x.jsonl"),
        "--device cuda: this machine has no CUDA GPU",
    ),
    Case(
        "generate: --prompts_file missing",
        (*GEN, "--ckpt", "lm.pt", "--prompts_file", "missing.txt", "--out", "x.jsonl"),
        "--prompts_file missing.txt: no such file",
    ),
    Case(
        "generate: --prompts_file is a folder",
        (*GEN, "--ckpt", "lm.pt", "--prompts_file", "o", "--out", "x.jsonl"),
        "--prompts_file o is a folder",
    ),
    Case(
        "generate: --prompts_file is binary",
        (*GEN, "--ckpt", "lm.pt", "--prompts_file", "bin.txt", "--out", "x.jsonl"),
        "--prompts_file bin.txt is not UTF-8 text",
    ),
    Case(
        "generate: --config is malformed YAML",
        ("generate", "--config", "bad.yaml"),
        "--config bad.yaml is not valid YAML",
    ),
    Case(
        "sample: an option of the wrong type",
        ("sample", "--ckpt", "den.pt", "--out", "s.pt", "--steps", "abc"),
        'Parser key "steps"',
    ),
]


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
