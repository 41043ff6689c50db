"""``python -m prefalign generate``: sample continuations from a language-model weights file, as JSON lines."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from prefalign.checkpoint import CheckpointError
from prefalign.commands import resolve_device, run_command
from prefalign.data.text.model_tokenizer import tokenizer_of_model
from prefalign.models.generation import sample
from prefalign.models.loading import load_model
from prefalign.output_paths import check_outputs, write_text_atomically

PROMPTS_FILE_FIX = 'give a text file with one prompt per line, or a .jsonl file with a "prompt" field per line'


def read_prompts(prompt: str | None, prompts_file: str | None) -> list[str]:
    """One prompt per line, verbatim except the line ending (a trailing space is part of the prompt), or the
    ``"prompt"`` field of each line of a ``.jsonl`` file."""
    if (prompt is None) == (prompts_file is None):
        raise ValueError("give exactly one of --prompt TEXT or --prompts_file FILE.")
    if prompt is not None:
        return [prompt]
    path = Path(prompts_file)
    if path.is_dir():
        raise ValueError(f"--prompts_file {path} is a folder; {PROMPTS_FILE_FIX}.")
    if not path.is_file():
        raise ValueError(f"--prompts_file {path}: no such file; {PROMPTS_FILE_FIX}.")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(
            f"--prompts_file {path} is not UTF-8 text (byte {e.start} is {e.object[e.start : e.start + 1]!r}); {PROMPTS_FILE_FIX}."
        ) from None
    except OSError as e:
        raise ValueError(
            f"--prompts_file {path} cannot be read ({e.strerror or type(e).__name__}); {PROMPTS_FILE_FIX}."
        ) from None
    if path.suffix == ".jsonl":
        prompts = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                prompts.append(json.loads(line)["prompt"])
            except (json.JSONDecodeError, KeyError, TypeError):
                raise ValueError(f'{path}:{number} is not a JSON object with a "prompt" field.') from None
    else:
        prompts = lines
    if not prompts:
        raise ValueError(f"{path} holds no prompts.")
    return prompts


def generate_command(
    ckpt: str,
    out: str,
    prompt: str | None = None,
    prompts_file: str | None = None,
    num_samples: int = 1,
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> int:
    """Continue each prompt ``num_samples`` times and write ``{"prompt": ..., "completion": ...}`` per line to ``out``.

    Works on any language-model weights file (a reference or an exported policy): the model's tokenizer travels
    in it (a char model's vocabulary; a gpt2 model's tokenizer name and BPE file sha256, the file itself loaded
    from the verified local copy: see :mod:`prefalign.data.text.model_tokenizer`). All prompts × samples are
    sampled at once (prompts of the same length share a batch); the same seed gives the same text. A prompt longer
    than the model's block is refused; while generating, the context is cropped to its last ``block_size`` tokens
    (characters for a char model), so continuations may be longer than the block.

    Args:
        ckpt: a weights file of a language model (e.g. artifacts/reference/lm_tiny.pt or runs/.../policy.pt), or a
            Hugging Face policy directory (runs/.../policy of an HF run: a save_pretrained model or peft adapter).
        out: the JSON-lines file to write (not a folder, not an input; checked before the model is loaded).
        prompt: one prompt (give this or ``prompts_file``).
        prompts_file: one prompt per line, or a ``.jsonl`` file with a ``"prompt"`` field.
        num_samples: continuations per prompt.
        max_new_tokens: tokens (characters for a char model) to generate per continuation.
        temperature: 0 for greedy.
        top_k: sample from the k most likely tokens only (≥ 1; null: all tokens).
        seed: the sampling seed.
        device: where the model runs: cpu, cuda, cuda:<index> or auto (cuda when available).
    """
    for name, value in (("num_samples", num_samples), ("max_new_tokens", max_new_tokens), ("top_k", top_k)):
        if value is not None and value < 1:
            raise ValueError(
                f"--{name}={value} must be ≥ 1" + (" (or null: sample from every token)." if name == "top_k" else ".")
            )
    if temperature < 0:
        raise ValueError(f"--temperature={temperature} must be ≥ 0 (0: greedy).")
    device = resolve_device(device)
    check_outputs({"--out": out}, {"--ckpt": ckpt, "--prompts_file": prompts_file})
    prompts = read_prompts(prompt, prompts_file)
    from prefalign.families.hf.generation import hf_generate, is_hf_directory

    if is_hf_directory(ckpt):  # a Hugging Face policy (save_pretrained: full model or peft adapter)
        samples = hf_generate(ckpt, prompts, num_samples, max_new_tokens, temperature, top_k, seed, device)
        write_samples(out, prompts, dict(enumerate(samples)))
        return 0
    model = load_model(ckpt)
    tokenizer = tokenizer_of_model(model)
    if tokenizer is None or not hasattr(model, "block_size"):
        raise CheckpointError(
            f"{ckpt} holds a {type(model).__name__}, not a trained language model (no vocabulary): "
            "give a weights file written by an LM config (e.g. configs/lm_pretrain.yaml)."
        )
    model = model.to(device).eval()
    encoded = [tokenizer.encode(p, what=f"prompt {i + 1}") for i, p in enumerate(prompts)]
    if any(len(e) == 0 for e in encoded):
        raise ValueError("an empty prompt has no context to continue; give at least one character.")
    too_long = [i + 1 for i, e in enumerate(encoded) if len(e) > model.block_size]
    if too_long:
        unit = tokenizer.unit
        raise ValueError(
            f"prompt {too_long[0]} is {len(encoded[too_long[0] - 1])} {unit}s long, more than the model's block of "
            f"{model.block_size}: the model would never see its beginning. Shorten it to its last {model.block_size} {unit}s."
        )
    generator = torch.Generator(device=device).manual_seed(seed)
    completions: dict[int, list[str]] = {}
    for length in sorted(
        {len(e) for e in encoded}
    ):  # one batch per prompt length (in tokens): no padding inside the context
        rows = [i for i, e in enumerate(encoded) if len(e) == length]
        batch = torch.stack([encoded[i] for i in rows]).repeat_interleave(num_samples, dim=0).to(device)
        ids = sample(model, batch, max_new_tokens, len(tokenizer), model.block_size, temperature, top_k, generator)
        for j, i in enumerate(rows):
            completions[i] = [tokenizer.decode(ids[j * num_samples + s]) for s in range(num_samples)]
    write_samples(out, prompts, completions)
    return 0


def write_samples(out: str, prompts: list[str], completions: dict[int, list[str]]) -> None:
    """``{"prompt", "completion"}`` per line, written atomically."""
    write_text_atomically(
        out,
        "".join(
            json.dumps({"prompt": p, "completion": c}) + "\n" for i, p in enumerate(prompts) for c in completions[i]
        ),
    )
    print(f"wrote {sum(len(c) for c in completions.values())} samples to {out}")


def main(argv: list[str] | None = None) -> int:
    return run_command("generate", generate_command, argv)


if __name__ == "__main__":
    raise SystemExit(main())
