"""The argument parser of ``fit``/``validate``/``test``/``predict``: a parse error is one line, as every other error.

jsonargparse prints a usage block, a tip and a multi-line error ("Does not validate against any of the Union
subtypes ... Errors: - Problem with given class_path ..."). A person needs the option, the value and why: one line
``prefalign <command>: error: ...`` naming ``--help``, exit code 2 (argparse's), nothing else.
"""

from __future__ import annotations

import re
import sys
from typing import Any, NoReturn

from lightning.pytorch.cli import LightningArgumentParser

from prefalign.commands import one_line

_KEY = re.compile(r'^Parser key "([^"]+)":\s*')
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)':\s*(.*?)(?=\s+- |\s*$)")


def condensed(message: str) -> str:
    """jsonargparse's message as one line: the option as typed, then the cause(s) without the union noise."""
    text = " ".join(message.split())
    key = _KEY.match(text)
    body = text[key.end() :] if key else text
    failed_import = _CLASS_PATH.search(body)
    if failed_import:
        body = f"cannot use class_path {failed_import.group(1)}: {failed_import.group(2)}"
    else:
        given = re.search(r"Given value: (.*)$", body)
        body = one_line(ValueError(body))
        if given and given.group(1) not in body:
            body = f"{body.rstrip('.')}, got {given.group(1)}"
    return f"--{key.group(1)}: {body}" if key else body


class OneLineErrorParser(LightningArgumentParser):
    """LightningCLI's parser with jsonargparse's multi-line error block replaced by one line (``--debug`` keeps
    jsonargparse's own behaviour)."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        from jsonargparse._common import debug_mode_active  # noqa: PLC0415 - jsonargparse's own switch

        if not self.exit_on_error or debug_mode_active():
            super().error(message, ex)
        parser: Any = getattr(ex, "subcommand_parser", None) or self
        prog = parser.prog.replace(" [options]", "").split(" [")[0]
        sys.stderr.write(f"{prog}: error: {condensed(message)} (options: {prog} --help)\n")
        raise SystemExit(2)
