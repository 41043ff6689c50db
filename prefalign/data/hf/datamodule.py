"""TRLPreferenceDataModule: a preference dataset in TRL's format, tokenized as TRL's DPOTrainer, batched as its collator."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from prefalign.data.batches import AssembledBatches, TensorBatches
from prefalign.data.hf.formats import (
    add_eos,
    check_chat_template,
    check_split,
    detect_format,
    extract_prompt,
    is_conversational,
    load_any,
    tokenize_batch,
)
from prefalign.data.pair_cache import cache_is_valid, load_or_build
from prefalign.digests import fingerprint, tensors_sha256
from prefalign.strategies.sharding import shards_parameters


def pad_rows(rows: list[list[int]], value: int, width: int) -> Tensor:
    out = torch.full((len(rows), max(width, 1)), value, dtype=torch.long)
    for i, r in enumerate(rows):  # once per dataset, at setup (not in the training step)
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def prompt_fits(batch: dict[str, list], max_length: int) -> list[bool]:
    """TRL's filter: rows whose prompt alone fills ``max_length`` are dropped."""
    return [len(p) < max_length for p in batch["prompt_ids"]]


def interleave(gathered: Tensor, n: int) -> Tensor:
    """Undo a world-strided split: ``gathered[r, j]`` is row ``j * W + r`` (shards wrapped to equal length)."""
    return gathered.transpose(0, 1).reshape(-1, *gathered.shape[2:])[:n]


class TRLSamplerOrder(TensorBatches):
    """:class:`TensorBatches` drawing each epoch's order as TRL's Trainer does: accelerate's ``SeedableRandomSampler``
    (transformers' ``RandomSampler`` replaced by ``accelerator.prepare``; accelerate data_loader.py) seeds a generator
    with ``seed + epoch`` and takes ``torch.randperm(n)``, where ``seed`` is TrainingArguments' ``data_seed``, else the
    torch seed ``set_seed(args.seed)`` left (TRL's default 42).

    Under DDP the training order is sharded as accelerate's ``BatchSamplerShard`` shards it (``split_batches=False``,
    ``even_batches=True``): the permutation is cut into batches of ``batch_size`` and rank ``r`` takes batches
    ``r, r + W, r + 2W, ...``; the last round is completed by cycling from the start of the permutation. So step
    ``k`` of a W-process run with per-device batch B sees, over all ranks, the rows that step ``k`` of a
    single-process run with batch ``W * B`` sees, and every rank sees TRL's own per-rank batch."""

    def _accelerate_shards(self) -> bool:
        return self.shuffle and self.world_size > 1

    def __len__(self) -> int:
        if not self._accelerate_shards():
            return super().__len__()
        return -(-self.n // (self.world_size * self.batch_size))

    def _indices(self) -> Tensor:
        if not self.shuffle:
            return super()._indices()
        order = torch.randperm(self.n, generator=torch.Generator().manual_seed(self.seed + self.epoch))
        if self.world_size == 1:
            return order
        rounds, width = len(self), self.world_size * self.batch_size
        padded = order.repeat(-(-rounds * width // self.n))[: rounds * width]  # cyclic, as accelerate's initial_data
        return padded.view(rounds, self.world_size, self.batch_size)[:, self.rank].reshape(-1)


class TRLBatches(AssembledBatches):
    """Batches in TRL's ``DataCollatorForPreference`` layout from pre-padded tensors, without per-example Python.

    Each split is held as ``[N, L]`` tensors (prompt + completion ids truncated to ``max_length``, their lengths and
    completion masks); a batch takes its rows by index (:class:`TensorBatches`: seeded shuffling, DDP shards,
    resumable; in TRL's order on one process: :class:`TRLSamplerOrder`) and trims them to the longest sequence in
    the batch. Paired data gives ``input_ids``,
    ``attention_mask``, ``completion_mask`` ``[2B, T]`` (chosen rows then rejected rows, right-padded); unpaired data
    ``[B, T]`` and ``desirable``. Cached reference sums (``ref_head``/``ref_tail``) follow the same row order."""

    def __init__(self, tensors: dict[str, Tensor], paired: bool, **kwargs: Any) -> None:
        self.paired = paired
        self.rows = TRLSamplerOrder(tensors, **kwargs)

    def assemble(self, b: dict[str, Tensor]) -> dict[str, Tensor]:
        sides = ("chosen", "rejected") if self.paired else ("chosen",)
        width = int(max(b[f"{s}_length"].max() for s in sides))
        out = {
            "input_ids": torch.cat([b[f"{s}_ids"][:, :width] for s in sides]),
            "attention_mask": torch.cat([(torch.arange(width) < b[f"{s}_length"].unsqueeze(1)).long() for s in sides]),
            "completion_mask": torch.cat([b[f"{s}_completion"][:, :width] for s in sides]).long(),
        }
        if "ref_head" in b:
            out["ref_head"], out["ref_tail"] = b["ref_head"].t().reshape(-1), b["ref_tail"].t().reshape(-1)
        if not self.paired:
            out["desirable"] = b["desirable"]
        return out


class TRLPreferenceDataModule(L.LightningDataModule):
    """A preference dataset in TRL's format (``pip install -e ".[hf]"``), for :class:`~prefalign.families.hf.HFCausalLMFamily`.

    Loaded with ``datasets`` from a local json/jsonl/parquet file (always) or a hub name (where the hub is
    reachable); formats: standard, conversational, implicit prompt, unpaired (see :mod:`prefalign.data.hf.formats`).
    Tokenized with the *model's* tokenizer (the family hands it over before training) exactly as TRL 1.16's
    ``DPOTrainer``; ``datasets`` caches the tokenized data under its fingerprints. Sequences longer than
    ``max_length`` are truncated keeping the start (TRL's default ``truncation_mode``) and rows whose prompt alone
    fills ``max_length`` are dropped and counted, as TRL drops them.

    Validation: the dataset's own ``val_split`` when it has one, else ``val_fraction`` of the training rows when asked
    (seeded), else none: a file with a single split trains on all of it.

    Reference log-probs are computed once (the family calls :meth:`precompute_reference` when the reference is frozen)
    and cached on disk with :mod:`prefalign.data.pair_cache`, keyed by the model files, the tokenized data's
    fingerprint and the tokenization settings.

    Args:
        dataset_name: a hub name or a local file/folder (``--dataset_name`` on the command line).
        train_split: the split to train on.
        val_split: the split to validate on, if the dataset has it (TRL's ``test`` convention).
        val_fraction: hold out this fraction of ``train_split`` for validation when there is no ``val_split``.
        batch_size: pairs per training step (TRL's ``per_device_train_batch_size``; TRL's default is 8).
        eval_batch_size: pairs per validation step (default: ``batch_size``).
        max_length: TRL's ``max_length`` (default 1024); None: no truncation.
        truncation_mode: ``keep_start`` (TRL's default) or ``keep_end``.
        seed: shuffling and ``val_fraction`` seed. Training rows are drawn in the order TRL's Trainer draws them with
            ``seed=`` this value (TRL's default is 42), so runs on the same data see the same batches.
        cache_dir: where cached reference log-probs are written.
        num_proc: processes for ``datasets.map`` (TRL's ``dataset_num_proc``).
    """

    def __init__(
        self,
        dataset_name: str,
        train_split: str = "train",
        val_split: str | None = "test",
        val_fraction: float | None = None,
        batch_size: int = 8,
        eval_batch_size: int | None = None,
        max_length: int | None = 1024,
        truncation_mode: Literal["keep_start", "keep_end"] = "keep_start",
        seed: int = 42,
        cache_dir: str = "artifacts/hf_reference",
        num_proc: int | None = None,
    ) -> None:
        super().__init__()
        if truncation_mode not in ("keep_start", "keep_end"):
            raise ValueError(f"truncation_mode must be keep_start or keep_end, got {truncation_mode!r}")
        if max_length is not None and max_length < 2:
            raise ValueError(
                f"max_length={max_length} is too short: at least a prompt token and a completion token are needed."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if val_fraction is not None and not 0 < val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
        self.dataset_name, self.train_split, self.val_split, self.val_fraction = (
            dataset_name,
            train_split,
            val_split,
            val_fraction,
        )
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size or batch_size
        self.max_length, self.truncation_mode, self.seed = max_length, truncation_mode, seed
        self.cache_dir, self.num_proc = cache_dir, num_proc
        self.tokenizer: Any = None
        self.splits: dict[str, dict[str, Tensor]] = {}
        self.fingerprints: dict[str, str] = {}
        self.paired = True
        self.dropped = 0
        self.mining_stats: dict[str, float] = {}
        # PreferenceData: the pairs come from a file, not mined by a checkpoint, so the reference is the model's own.
        self.reference_ckpt: str | None = None

    @property
    def pairs(self) -> dict[str, Tensor]:
        """The tokenized training rows (what the module checks a preference objective has)."""
        return self.splits.get("train", {})

    # ------------------------------------------------------------------ preparation (before any work: the family calls it)
    def prepare(self, tokenizer: Any) -> None:
        """Load, check and tokenize the data with the model's tokenizer; errors are one line and come before training."""
        if self.splits:
            return
        self.tokenizer = tokenizer
        data = load_any(self.dataset_name)
        train = check_split(data, self.dataset_name, self.train_split)
        self.paired = detect_format(train.column_names) == "paired"
        check_chat_template(self.dataset_name, train[0], tokenizer)
        parts = {"train": train}
        if self.val_split is not None and self.val_split in data and self.val_split != self.train_split:
            parts["val"] = data[self.val_split]
        elif self.val_fraction is not None:
            split = train.train_test_split(test_size=self.val_fraction, seed=self.seed)
            parts = {"train": split["train"], "val": split["test"]}
        for name, part in parts.items():
            self.splits[name] = self._tokenize(part, name)

    def _tokenize(self, dataset: Any, name: str) -> dict[str, Tensor]:
        dataset = self.tokenize_dataset(dataset, name)
        tensors = self._tensors(dataset, ("chosen", "rejected") if self.paired else ("completion",))
        # Keyed by what the rows hold: datasets' own fingerprint hashes the tokenizer object too, and CI once saw it
        # give the same data two keys in two processes.
        self.fingerprints[name] = tensors_sha256(tensors)[:16]
        return tensors

    def tokenize_dataset(self, dataset: Any, name: str = "train") -> Any:
        """TRL's dataset preparation (``DPOTrainer._prepare_dataset``): the ``datasets.Dataset`` with ``prompt_ids`` and
        ``chosen_ids``/``rejected_ids`` (``completion_ids`` unpaired), fully truncated rows dropped and counted."""
        tok = self.tokenizer
        kwargs = {"batched": True, "num_proc": self.num_proc}
        completions = ("chosen", "rejected") if self.paired else ("completion",)
        if self.paired and "prompt" not in dataset.column_names:  # implicit prompt (TRL: extract_prompt)
            dataset = dataset.map(extract_prompt, num_proc=self.num_proc, desc=f"Extracting prompts ({name})")
        conversational = is_conversational(dataset[0])
        if not conversational:
            dataset = dataset.map(
                add_eos,
                fn_kwargs={"eos": tok.eos_token, "completions": completions},
                desc=f"Adding EOS ({name})",
                **kwargs,
            )
        dataset = dataset.map(
            tokenize_batch,
            fn_kwargs={"tokenizer": tok, "completions": completions, "conversational": conversational},
            desc=f"Tokenizing ({name})",
            **kwargs,
        )
        rows = len(dataset)
        if self.max_length is not None and self.truncation_mode == "keep_start":
            # A module-level function and plain fn_kwargs: a lambda over ``self`` made the fingerprint (and so the
            # reference cache's key) depend on every attribute of the data module, the batch size included.
            dataset = dataset.filter(
                prompt_fits, fn_kwargs={"max_length": self.max_length}, batched=True, num_proc=self.num_proc
            )
        dropped = rows - len(dataset)
        if len(dataset) == 0:
            raise ValueError(
                f"dataset {self.dataset_name} ({name}) is empty after truncation: all {rows} prompts are at least max_length="
                f"{self.max_length} tokens long; raise data.init_args.max_length."
            )
        if dropped:
            rank_zero_warn(
                f"{dropped} of {rows} {name} rows dropped: their prompt alone fills max_length={self.max_length} (as TRL drops them)."
            )
        if name == "train":
            self.dropped = dropped
            self.mining_stats = {"data/train_rows": float(len(dataset)), "data/dropped_rows": float(dropped)}
        return dataset

    def _tensors(self, dataset: Any, completions: tuple[str, ...]) -> dict[str, Tensor]:
        sl = (
            slice(None, self.max_length)
            if self.truncation_mode == "keep_start"
            else slice(-self.max_length if self.max_length else None, None)
        )
        prompts = dataset["prompt_ids"]
        out: dict[str, Tensor] = {}
        seqs, masks = {}, {}
        for side, c in zip(("chosen", "rejected"), completions):
            seqs[side] = [(p + r)[sl] for p, r in zip(prompts, dataset[f"{c}_ids"])]
            masks[side] = [([0] * len(p) + [1] * len(r))[sl] for p, r in zip(prompts, dataset[f"{c}_ids"])]
        width = max(len(x) for rows in seqs.values() for x in rows)
        for side in seqs:  # one width for both sides, so a batch's chosen and rejected rows stack
            out[f"{side}_ids"] = pad_rows(seqs[side], self.tokenizer.pad_token_id, width)
            out[f"{side}_completion"] = pad_rows(masks[side], 0, width).bool()
            out[f"{side}_length"] = torch.tensor([len(x) for x in seqs[side]], dtype=torch.long)
        if not self.paired:
            out["desirable"] = torch.tensor([bool(x) for x in dataset["label"]])
        return out

    # ------------------------------------------------------------------ Lightning
    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            module = getattr(getattr(self, "trainer", None), "lightning_module", None)
            policy = getattr(module, "policy", None)
            if policy is None or not hasattr(policy, "load_tokenizer"):
                raise ValueError(
                    "TRLPreferenceDataModule takes its tokenizer from the model: use it with model.backbone prefalign.models.HFCausalLM."
                )
            self.prepare(policy.load_tokenizer())

    def precompute_reference(self, policy: Any, reference_sums: Any, trainer: Any = None) -> None:
        """Reference log-prob sums of every training row, computed once and cached on disk (pair cache), keyed by the
        model's files, the tokenized data's fingerprint and the tokenization settings.

        Under several processes every rank computes an equal share of the rows (so a sharded reference, whose forward
        is collective, runs the same number of batches on every rank), the shares are gathered, and rank 0 alone
        writes the file; every rank then reads that file after a barrier."""
        train = self.splits["train"]
        if "ref_head" in train:
            return
        key = {
            "model": policy.files_digest(),
            "data": self.fingerprints["train"],
            "max_length": self.max_length,
            "truncation_mode": self.truncation_mode,
            "format": 2,
        }
        digest = fingerprint(key)
        path = Path(self.cache_dir) / f"hf-ref-{digest}.pt"
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        cached = cache_is_valid(path, digest, "reference log-probs") if rank == 0 else False
        if world > 1:
            cached = trainer.strategy.broadcast(cached)
        computed: dict[str, Tensor] = {}
        if not cached:
            rank_zero_info(
                f"Computing reference log-probs of {len(train['chosen_ids'])} training rows over {world} "
                f"process(es) (cached under {self.cache_dir}) ..."
            )
            device = next(policy.parameters()).device
            computed = self._reference_share(train, reference_sums, device, rank, world)
            if world > 1:
                computed = {
                    k: interleave(trainer.strategy.all_gather(v), len(train["chosen_ids"])) for k, v in computed.items()
                }
            computed = {k: v.cpu() for k, v in computed.items()}
        cached = load_or_build(path, digest, lambda: computed, trainer, what="reference log-probs")
        # [N, 2] (chosen, rejected) per row; a batch's rows are re-laid out as [chosen; rejected] in TRLBatches.assemble.
        train["ref_head"], train["ref_tail"] = cached["ref_head"], cached["ref_tail"]

    def _reference_share(
        self, train: dict[str, Tensor], reference_sums: Any, device: Any, rank: int, world: int
    ) -> dict[str, Tensor]:
        """This rank's rows ``rank, rank + W, ...`` (wrapped to equal length), ``[ceil(N / W), 1 or 2]`` per key."""
        batches = TRLBatches(
            train, self.paired, batch_size=self.eval_batch_size, rank=rank, world_size=world, pad_shards=True
        )
        heads, tails = [], []
        for batch in batches:
            sums = reference_sums({k: v.to(device) for k, v in batch.items()})
            n = len(batch["input_ids"]) // (2 if self.paired else 1)
            shape = (2, n) if self.paired else (1, n)
            heads.append(sums["ref_head"].view(shape).t())
            tails.append(sums["ref_tail"].view(shape).t())
        return {"ref_head": torch.cat(heads), "ref_tail": torch.cat(tails)}

    def _loader(self, split: str, train: bool) -> TRLBatches:
        trainer = getattr(self, "trainer", None)
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        if not train and trainer is not None and shards_parameters(trainer.strategy):
            # A sharded model's forward is collective: every rank must run the same batches, so under FSDP every rank
            # evaluates every row (the family's sums then reduce to the same means).
            rank, world = 0, 1
        tensors = self.splits[split]
        if not train:
            tensors = {k: v for k, v in tensors.items() if not k.startswith("ref_")}
        return TRLBatches(
            tensors,
            self.paired,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            seed=self.seed,
            rank=rank,
            world_size=world,
        )

    def train_dataloader(self) -> TRLBatches:
        return self._loader("train", True)

    def val_dataloader(self) -> TRLBatches | list:
        return self._loader("val", False) if "val" in self.splits else []

    def test_dataloader(self) -> TRLBatches | list:
        return self.val_dataloader()
