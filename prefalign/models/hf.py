"""HFCausalLM: a pretrained Hugging Face causal language model as a prefalign backbone (``pip install -e ".[hf]"``).

The model is loaded with ``AutoModelForCausalLM.from_pretrained`` from a hub name or a local ``save_pretrained``
directory, always with ``trust_remote_code=False``: a downloaded or local model is data, and no code it ships is run.
With ``peft`` (a ``peft.LoraConfig`` or its keyword dict) the model is wrapped by peft as TRL wraps it, only the
adapters train, and the reference is the same model with its adapters off (:meth:`load_reference`): one copy of
the weights.

The seam with :class:`~prefalign.core.AlignmentModule` is two methods, which any backbone may provide:
``load_reference()`` (the frozen reference, when ``model.reference_ckpt`` is not set) and
``save_pretrained(dir)`` (how the trained policy is exported instead of a prefalign weights file).
"""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import Tensor, nn


class MissingExtraError(ImportError):
    """An optional dependency of the ``hf`` extra is not installed; the message names the install command."""


def require(package: str, what: str) -> Any:
    """Import an optional dependency of the ``hf`` extra, or fail with one line naming the install command."""
    import importlib

    try:
        module = importlib.import_module(package)
    except ImportError:
        raise MissingExtraError(
            f"{what} needs the '{package}' package, which is not installed: pip install -e \".[hf]\" "
            "(transformers, peft and datasets, pinned in constraints.txt)."
        ) from None
    quiet_progress(package)
    return module


def quiet_progress(package: str) -> None:
    """Progress bars of transformers/datasets for people at a terminal only (as prefalign's own): in CI, logs and batch
    jobs they fill stderr with carriage-return lines."""
    import sys

    if sys.stderr.isatty():
        return
    if package == "transformers":
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    elif package == "datasets":
        import datasets

        datasets.disable_progress_bars()


def resolve_model_dir(model_name_or_path: str) -> Path | None:
    """The local directory holding the model's files: the directory itself, or the hub cache's snapshot of a hub name
    (None when it is neither, so the caller can say the model was not found)."""
    path = Path(model_name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists() or model_name_or_path.startswith((".", "/", "~")) or model_name_or_path.count("/") > 1:
        return None
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                model_name_or_path,
                allow_patterns=["*.json", "*.safetensors", "*.bin", "*.model", "*.tiktoken", "*.txt", "*.jinja"],
            )
        )
    except Exception:  # not on the hub, no network, or offline without a cached copy
        return None


def check_model_dir(model_name_or_path: str) -> Path:
    """The model's local directory, or a one-line error saying where it was looked for."""
    folder = resolve_model_dir(model_name_or_path)
    if folder is None or not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"model not found: {model_name_or_path!r} is neither a local save_pretrained directory (with config.json) nor a "
            "hub model reachable from here (HF_HUB_OFFLINE, no network, or a misspelt name); pass --model_name_or_path DIR_OR_NAME."
        )
    return folder


def model_files_digest(folder: Path) -> str:
    """sha256 over the model's config, weights and tokenizer files (names and bytes): what cached reference log-probs
    are keyed by, so a changed model never reuses them."""
    h = hashlib.sha256()
    for file in sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix in (".json", ".safetensors", ".bin", ".model", ".tiktoken", ".jinja", ".txt")
    ):
        h.update(file.name.encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def lora_config(peft_config: Any) -> Any:
    """A ``peft.LoraConfig`` from a config object or its keyword dict (``task_type`` CAUSAL_LM by default)."""
    peft = require("peft", "LoRA (model.backbone.init_args.peft)")
    if isinstance(peft_config, peft.PeftConfig):
        return peft_config
    if isinstance(peft_config, dict):
        return peft.LoraConfig(**{"task_type": "CAUSAL_LM", **peft_config})
    raise TypeError(f"peft must be a peft.LoraConfig or a dict of its arguments, got {type(peft_config).__name__}")


class HFCausalLM(nn.Module):
    """A Hugging Face causal LM: ``forward(input_ids [B, T], attention_mask [B, T] | None) -> logits [B, T, V]``.

    Args:
        model_name_or_path: a hub name (where the hub is reachable) or a local ``save_pretrained`` directory.
        peft: a ``peft.LoraConfig`` (or the dict of its arguments, e.g. ``{r: 8, lora_alpha: 16, target_modules:
            [q_proj, v_proj]}``): train LoRA adapters through peft; the reference is then the policy with its
            adapters off (TRL's way), so ``model.reference_ckpt`` stays unset.
        dtype: the weights' dtype (``float32``; ``bfloat16`` halves memory on accelerators).
        gradient_checkpointing: recompute activations in the backward pass (memory for time, as TRL's option).
        disable_dropout: set every dropout probability to 0 (TRL's ``disable_dropout``, default True): the policy's and
            the reference's log-probs of the same sequence then agree at step 0.
    """

    def __init__(
        self,
        model_name_or_path: str,
        peft: Any = None,
        dtype: str = "float32",
        gradient_checkpointing: bool = False,
        disable_dropout: bool = True,
    ) -> None:
        super().__init__()
        transformers = require("transformers", "HFCausalLM")
        self.model_name_or_path = model_name_or_path
        self.folder = check_model_dir(model_name_or_path)
        self.dtype_name = dtype
        model = transformers.AutoModelForCausalLM.from_pretrained(
            str(self.folder), dtype=getattr(torch, dtype), trust_remote_code=False
        )
        model.train()  # from_pretrained returns eval mode; Lightning switches modes from here
        if disable_dropout:
            for m in model.modules():
                if isinstance(m, nn.Dropout):
                    m.p = 0.0
        if gradient_checkpointing:
            from prefalign.strategies.sharding import enable_activation_checkpointing

            enable_activation_checkpointing(model)
        self.uses_peft = peft is not None
        if self.uses_peft:
            peft_lib = require("peft", "LoRA (model.backbone.init_args.peft)")
            model = peft_lib.get_peft_model(model, lora_config(peft))
        self.model = model
        self.init_args = {"model_name_or_path": model_name_or_path, "dtype": dtype}

    @property
    def config(self) -> Any:
        return self.model.config

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    def completion_logps(
        self,
        input_ids: Tensor,
        attention_mask: Tensor,
        completion_mask: Tensor,
        temperature: float = 1.0,
        position_ids: Tensor | None = None,
        share_prompt: bool = False,
        buckets: int = 1,
    ) -> Tensor:
        """``[N, T-1]`` fp32 log-probs of the completion tokens (0 elsewhere), without the ``[N, T, V]`` logits
        (:mod:`prefalign.models.hf_logps`); what the family uses unless it needs the full distribution (WPO).
        ``temperature`` scores a tempered sampling distribution (RL rollouts). ``share_prompt`` (a paired batch,
        ``[chosen; rejected]`` rows) runs each pair's prompt once, and ``buckets`` > 1 runs the rows in that many
        forwards of similar lengths: the same log-probs up to float rounding, with less work
        (:func:`~prefalign.models.hf_logps.pair_completion_token_logps`)."""
        from prefalign.models.hf_logps import CHUNK_ROWS, completion_token_logps, pair_completion_token_logps

        base = self.model.get_base_model() if self.uses_peft else self.model
        if (share_prompt or buckets > 1) and temperature == 1.0 and position_ids is None:
            return pair_completion_token_logps(
                base, input_ids, attention_mask, completion_mask, share_prompt, buckets, CHUNK_ROWS
            )
        return completion_token_logps(
            base, input_ids, attention_mask, completion_mask, CHUNK_ROWS, temperature, position_ids
        )

    @torch.no_grad()
    def generate(self, input_ids: Tensor, attention_mask: Tensor, generation_config: Any) -> Tensor:
        """``transformers``' ``generate`` (KV cache) on left-padded prompts, in eval mode (no dropout; gradient
        checkpointing, which only acts in training mode, stays out of the way of the cache); the mode is restored."""
        was_training = self.training
        self.eval()
        try:
            return self.model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=generation_config
            )
        finally:
            self.train(was_training)

    def load_tokenizer(self) -> Any:
        return load_tokenizer(str(self.folder))

    def files_digest(self) -> str:
        return model_files_digest(self.folder)

    # ------------------------------------------------------------------ the seam with AlignmentModule
    def load_reference(self) -> nn.Module:
        """The frozen reference: this model with its adapters off (peft), else a frozen ``from_pretrained`` copy."""
        if self.uses_peft:
            return AdaptersOff(self)
        reference = HFCausalLM(self.model_name_or_path, dtype=self.dtype_name)
        return reference.eval().requires_grad_(False)

    def save_pretrained(self, folder: str | Path, state_dict: dict[str, Tensor] | None = None) -> Path:
        """Write the policy so transformers/peft load it unchanged: the full model (``AutoModelForCausalLM``) or, with
        peft, the adapter (``PeftModel.from_pretrained(base, folder)``); the tokenizer beside it either way.
        ``state_dict``: the model's full state dict when its own parameters are shards (FSDP, gathered on rank 0)."""
        import os
        import shutil
        import tempfile

        folder = Path(folder)
        folder.parent.mkdir(parents=True, exist_ok=True)
        # Written into a temporary folder beside it and renamed: a crash never leaves a half-written model where a
        # recipe looks for one (a reference recipe's export is "done" once its config.json exists).
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            self.model.save_pretrained(str(tmp), state_dict=state_dict)
            self.load_tokenizer().save_pretrained(str(tmp))
            (tmp / "prefalign.json").write_text(
                json.dumps({"base_model": self.model_name_or_path, "peft": self.uses_peft}, indent=2)
            )
            if folder.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
                os.replace(folder, old / folder.name)
                os.replace(tmp, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, folder)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return folder

    @contextmanager
    def adapters_disabled(self) -> Iterator[None]:
        with self.model.disable_adapter():
            yield


class AdaptersOff(nn.Module):
    """The reference of a peft policy as a view: the policy with its adapters disabled, in eval mode, under
    ``no_grad`` (TRL's reference when ``ref_model`` is None with a peft model). Held as a plain attribute, so
    nothing is saved or moved twice; ``parameters()`` yields the policy's frozen base weights."""

    def __init__(self, policy: HFCausalLM) -> None:
        super().__init__()
        object.__setattr__(self, "policy", policy)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad(), self.policy.adapters_disabled():
                return self.policy(input_ids, attention_mask)
        finally:
            self.policy.train(was_training)

    def completion_logps(
        self, input_ids: Tensor, attention_mask: Tensor, completion_mask: Tensor, **kwargs: Any
    ) -> Tensor:
        was_training = self.policy.training
        self.policy.eval()
        try:
            with torch.no_grad(), self.policy.adapters_disabled():
                return self.policy.completion_logps(input_ids, attention_mask, completion_mask, **kwargs)
        finally:
            self.policy.train(was_training)

    def parameters(self, recurse: bool = True) -> Iterator[nn.Parameter]:
        return (p for p in self.policy.parameters(recurse) if not p.requires_grad)

    def eval(self) -> AdaptersOff:
        return self

    def requires_grad_(self, requires_grad: bool = True) -> AdaptersOff:
        return self


def load_tokenizer(model_name_or_path: str) -> Any:
    """The model's own tokenizer (``AutoTokenizer``, no remote code), with TRL's padding fallback: pad = eos."""
    transformers = require("transformers", "the tokenizer of a Hugging Face model")
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_name_or_path, trust_remote_code=False)
    if tokenizer.pad_token is None:  # TRL's DPOTrainer does the same (dpo_trainer.py: pad_token = eos_token)
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
