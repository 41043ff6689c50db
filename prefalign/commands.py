"""The extra subcommands beside Lightning's fit/validate/test/predict, and how errors reach a person.

Each extra subcommand is one line in :data:`EXTRA_COMMANDS`: a module with ``main(argv) -> int`` and a one-line
help shown by ``python -m prefalign --help``.
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from typing import Callable

PROG = "python -m prefalign"

EXTRA_COMMANDS: dict[str, tuple[str, str]] = {
    "dream": ("prefalign.viz.dream_command", "optimise inputs until a frozen classifier sees each class (seed 003)"),
    "generate": ("prefalign.families.language.generate_command", "sample text from a language-model weights file, as JSON lines (seed 002)"),
    "sample": ("prefalign.families.denoiser.sample_command", "draw digits from a denoiser weights file, as a tensor file and a PNG grid (seed 001)"),
}

# Exit codes: 2 = bad input (config, arguments, files), as argparse uses for usage errors; 1 = the run failed.
EXIT_BAD_INPUT = 2
EXIT_RUN_FAILED = 1


def extra_commands_help() -> str:
    width = max(len(n) for n in EXTRA_COMMANDS)
    lines = [f"  {name:<{width}}  {help_}  ({PROG} {name} --help)" for name, (_, help_) in EXTRA_COMMANDS.items()]
    return "more subcommands:\n" + "\n".join(lines)


def extra_command(name: str) -> Callable[[list[str]], int | None]:
    return importlib.import_module(EXTRA_COMMANDS[name][0]).main


def debug_requested(words: list[str]) -> bool:
    return "--debug" in words or os.environ.get("PREFALIGN_DEBUG", "").lower() in ("1", "true", "yes")


def bad_input_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message already names the problem and its fix: shown as one line, no traceback."""
    from prefalign.checkpoint import CheckpointError
    from prefalign.data.mnist import MNISTUnavailableError
    from prefalign.data.text.bpe_tokenizer import TokenizerUnavailableError
    from prefalign.data.text.gpt2_vocab import VocabularyUnavailableError
    from prefalign.models.hf import MissingExtraError

    return (ValueError, CheckpointError, MNISTUnavailableError, FileNotFoundError, TokenizerUnavailableError, VocabularyUnavailableError,
            MissingExtraError)


def run_guarded(fn: Callable[[], int | None], debug: bool) -> int:
    """Run ``fn``; a known error becomes ``prefalign: error: <message>`` on stderr and an exit code."""
    if debug:
        return fn() or 0
    try:
        return fn() or 0
    except bad_input_errors() as e:
        print(f"prefalign: error: {one_line(e)} (--debug shows the traceback)", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT
    except FloatingPointError as e:  # a NaN loss: the message says what to change
        print(f"prefalign: error: {one_line(e)}", file=sys.stderr, flush=True)
        return EXIT_RUN_FAILED


def one_line(error: BaseException) -> str:
    """An error as the one line a person reads (a missing file by its name; jsonargparse's union noise removed)."""
    if isinstance(error, FileNotFoundError) and error.filename is not None:
        return f"file not found: {error.filename}"
    text = " ".join(str(error).split()) or type(error).__name__
    return _union_error_cause(text) or text


# jsonargparse reports a class that refused its arguments as a failed match against every type the config key
# accepts ("Does not validate against any of the Union subtypes ... Errors: - <ours> - Import path ... - Expected
# a <class 'NoneType'> Given value: Namespace(...)"). Only our own message names the problem.
_UNION_NOISE = ("Import path ", "Expected a <class 'NoneType'>", "Not a valid subclass", "Given value")


def _union_error_cause(text: str) -> str | None:
    if "Does not validate against any of the Union subtypes" not in text or "Errors: " not in text:
        return None
    causes = [c.strip() for c in re.split(r"(?:^|\s)- ", text.split("Errors: ", 1)[1])]
    causes = [c for c in causes if c and not c.startswith(_UNION_NOISE)]
    return " ".join(dict.fromkeys(causes)) or None
