"""Write the objective table of docs/objectives.md from the objective classes themselves (flags, paper, capabilities).

    python scripts/objective_table.py          # rewrite the block between <!-- objectives:begin/end --> in docs/objectives.md
    python scripts/objective_table.py --check  # exit 1 if that block is out of date (the tests run this)

Which families support an objective is decided the way the module decides it (:func:`check_capabilities`), over the
registered families (:mod:`prefalign.families.registry`): a family supports it when it provides every capability the
objective ``requires``. ``tests/families/test_every_objective_on_every_family.py`` runs each objective on each family
so listed, and checks that the others refuse it.
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

import reporting  # noqa: E402

import prefalign.objectives as objectives  # noqa: E402
from prefalign.families.registry import FAMILIES, capabilities, families_supporting  # noqa: E402
from prefalign.objectives import Objective, PPOLite  # noqa: E402

# One line of math per objective, in the table's plain-text notation: r = log π − log π_ref, h = r_w − r_l.
FORMULAS = {
    "SFT": "−log π(y_w)",
    "DPO": "−(1−ε) log σ(βh) − ε log σ(−βh)",
    "RobustDPO": "[(1−ε)(−log σ(βh)) − ε(−log σ(−βh))] / (1−2ε)",
    "IPO": "(h − 1/(2τ))², r per token on sequences (TRL)",
    "SigmoidNorm": "−log σ(β(r_w/|y_w| − r_l/|y_l|))",
    "LDDPO": "DPO on log π = Σ_{t≤ℓ} + α Σ_{t>ℓ}, ℓ = min(|y_w|, |y_l|)",
    "Hinge": "max(0, 1 − βh)",
    "RPO": "−log σ(βh) − α log π(y_w)",
    "SimPO": "−log σ(β(ℓ_w − ℓ_l) − γ), ℓ = mean token log π",
    "KTO": "λ_D(1−σ(β(r_w−z₀))) + λ_U(1−σ(β(z₀−r_l))), z₀ ≈ KL",
    "ORPO": "−ℓ_w − λ log σ(log odds(y_w) − log odds(y_l))",
    "EXO": "σ(βh) log(σ(βh)/(1−ε)) + σ(−βh) log(σ(−βh)/ε)",
    "NCA": "−log σ(βr_w) − ½ log σ(−βr_w) − ½ log σ(−βr_l)",
    "BCO": "−log σ(βr_w − δ) − log σ(−(βr_l − δ)), δ = running mean reward",
    "SPPO": "(r_w − 1/(2β))² + (r_l + 1/(2β))²",
    "AOT": "−log σ(β(sort(m_θ) − sort(m_ref))), m = log π(y_w) − log π(y_l)",
    "AOTPair": "−log σ(β(sort(r_w) − sort(r_l)))",
    "APOZero": "1 − σ(βr_w) + σ(βr_l)",
    "APODown": "σ(βr_w) + 1 − σ(βh)",
    "DiscoPOP": "(1−m)(−log σ(βh)) + m e^{−βh}, m = σ(βh/τ)",
    "CPO": "−log σ(β(log π(y_w) − log π(y_l))) − α log π(y_w)",
    "FDivergence": "the wrapped loss with r replaced by f′(π/π_ref) (forward KL, JS, α)",
    "WPO": "w(y_w) w(y_l) · (wrapped per-pair loss), w = on-policy weight",
    "WeightedSum": "Σ_k w_k L_k",
    "ReferenceFree": "the wrapped loss with log π_ref = 0",
    "PPOLite": "clipped ratio × group-normalised advantage + KL to the reference",
}


# Modifiers wrap another objective and need what it needs plus their own: each is shown around DPO (which needs
# nothing), as the every-objective test builds them.
MODIFIERS = {
    "FDivergence": lambda: objectives.FDivergence(objectives.DPO()),
    "WPO": lambda: objectives.WPO(objectives.DPO()),
    "WeightedSum": lambda: objectives.WeightedSum([objectives.DPO(), objectives.NCA()]),
    "ReferenceFree": lambda: objectives.ReferenceFree(objectives.DPO()),
}


def paper(cls: type) -> str:
    found = re.search(r"arXiv[: ]?(\d{4}\.\d{4,5})", inspect.getdoc(cls) or "")
    return f"[{found.group(1)}](https://arxiv.org/abs/{found.group(1)})" if found else "—"


def row(name: str, cls: type) -> str:
    requires = MODIFIERS[name]().requires if name in MODIFIERS else cls.requires
    if cls is PPOLite:
        needs_ref, data = "yes (KL)", "prompts (samples k)"
    else:
        needs_ref = "yes" if cls.needs_reference else "no"
        data = "pairs" if cls.needs_pairs else "chosen only"
        if cls.accepts_unpaired:
            data = "pairs or unpaired"
        if name in MODIFIERS:
            needs_ref = "as wrapped" if name != "ReferenceFree" else "no"
            data = "as wrapped"
    supported = families_supporting(requires)
    needs = ", ".join(sorted(requires)) or "—"
    return f"| `{name}` | {paper(cls)} | {FORMULAS[name]} | {needs_ref} | {data} | {needs} | {', '.join(supported) or '—'} |"


def table() -> str:
    names = [
        n
        for n in objectives.__all__
        if inspect.isclass(getattr(objectives, n))
        and (issubclass(getattr(objectives, n), Objective) or getattr(objectives, n) is PPOLite)
        and n != "Objective"
    ]
    missing = sorted(set(names) - set(FORMULAS))
    if missing:
        raise SystemExit(f"objective_table: no formula for {', '.join(missing)}; add one to FORMULAS")
    head = [
        "| objective (`prefalign.objectives.…`) | paper | loss per example | reference | data | needs | families |",
        "|---|---|---|---|---|---|---|",
    ]
    registered = "; ".join(f"{name}: {', '.join(sorted(capabilities(name))) or 'none'}" for name in FAMILIES)
    note = (
        "Generated by `python scripts/objective_table.py` from the classes. r = log π − log π_ref, h = r_w − r_l, σ the "
        "logistic function. A family supports an objective when it provides every capability in *needs* "
        f"(registered families and their capabilities: {registered}); modifiers are shown wrapping DPO."
    )
    return "\n".join(head + [row(n, getattr(objectives, n)) for n in names]) + "\n\n" + note


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    page = reporting.page("objectives", REPO)
    wanted = table()
    if a.check:
        if reporting.read_block(page, "objectives") != wanted + "\n":
            print(
                f"{page.relative_to(REPO)}'s objective table is out of date: run python scripts/objective_table.py",
                file=sys.stderr,
            )
            return 1
        return 0
    reporting.write_block("objectives", wanted, REPO)
    return 0


if __name__ == "__main__":
    sys.exit(main())
