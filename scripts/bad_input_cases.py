"""The bad inputs of docs/bad_input.md: each a command line and a substring of the one line it must print.

scripts/bad_input_table.py runs them (in a folder of test files it makes) and writes the table. To add a case, append
``Case(title, argv, expected)`` to CASES (argv relative to that folder; ``SEED_DPO`` is a fast fit config on synthetic
digits) and add any file it needs to ``make_files`` there.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
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
