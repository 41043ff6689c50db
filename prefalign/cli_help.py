"""What ``python -m prefalign --help`` and each subcommand's ``--help`` say, and the formatter that keeps it readable."""

from __future__ import annotations

DESCRIPTION = """prefalign — preference alignment (SFT, DPO family, PPO-lite) on models small enough to understand,
then on any Hugging Face causal LM.

  python -m prefalign fit --config configs/sft.yaml        train the reference (clean MNIST, the notebook's recipe)
  python -m prefalign fit --config configs/dpo.yaml        mine pairs with it, align, and test
  python -m prefalign test --config configs/dpo.yaml --ckpt_path runs/dpo/version_0/checkpoints/last.ckpt
  python -m prefalign dream --ckpt runs/dpo/version_0/policy.pt --compare_ckpt artifacts/reference/seed_cnn.pt
  python -m prefalign fit --config configs/dpo.yaml --print_config   show the fully resolved config
  python -m prefalign fit --config configs/quickstart.yaml           first run: the whole pipeline on synthetic digits, under a minute
  python -m prefalign fit --config configs/lm_ppo.yaml               a character LM on Shakespeare, aligned with PPO-lite
  python -m prefalign generate --ckpt artifacts/reference/lm_tiny.pt --prompt "To be" --out samples.jsonl
  python -m prefalign fit --config configs/hf_dpo.yaml --model_name_or_path MODEL --dataset_name DATA
                                                                     DPO on a Hugging Face model and TRL-format data
  python -m prefalign fit --config configs/hf_grpo.yaml --model_name_or_path MODEL --dataset_name PROMPTS
                                                                     GRPO (online RL) on it with your reward functions

Runs log to Weights & Biases (offline without an account; `--wandb false` or configs/logger/csv.yaml turns it off)
and to CSV files in runs/<name>/version_<n>/. Errors print one line; --debug (or PREFALIGN_DEBUG=1) shows the traceback.
"""

# Where the options of the classes a config names are: not in `fit --help`, which would list them all.
CLASS_OPTIONS_HELP = """The options of the classes a config names (data module, objective, backbone, ...) are not listed
here; show them one class at a time:
  --data.help CLASS             e.g. --data.help prefalign.data.PreferenceDataModule: the data module's options
  --model.objective.help CLASS  e.g. --model.objective.help prefalign.objectives.DPO; likewise --model.backbone.help,
                                --model.family.help, --model.optimizer.help, --trainer.logger.help
  --config RECIPE --print_config   every value a recipe resolves to"""

# One full sentence per subcommand (Lightning's are the first lines of its docstrings, cut mid-sentence).
SUBCOMMAND_HELP = {
    "fit": "Train a policy (a missing reference first, when --reference_recipe names its recipe), then test it.",
    "validate": "Evaluate a checkpoint on the validation split and write results_val.json.",
    "test": "Evaluate a checkpoint on the test split and write results_test.json.",
    "predict": "Write a checkpoint's predictions on the test split to predictions.pt in the run folder.",
}


class RawFormatter:
    """``--help`` that a person reads: the description's line breaks kept (argparse re-wraps it otherwise), each
    option's first sentence only, and no "known subclasses" list (for ``--model.backbone``, every torch module)."""

    def __new__(cls):
        import argparse
        import copy
        import re

        from jsonargparse import DefaultHelpFormatter

        class Formatter(argparse.RawDescriptionHelpFormatter, DefaultHelpFormatter):
            def _get_help_string(self, action):
                if action.help and isinstance(action.help, str):
                    action = copy.copy(action)
                    action.help = re.split(r"(?<=[.])\s", " ".join(action.help.split()), maxsplit=1)[0]
                return re.sub(r", known subclasses: [^)]*", "", super()._get_help_string(action))

        return Formatter
