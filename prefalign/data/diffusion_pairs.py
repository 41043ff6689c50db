"""DiffusionPreferenceDataModule: MNIST plus pairs of the reference denoiser's own samples, ranked by a mining judge."""

from __future__ import annotations

import time
from typing import Literal

import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from prefalign.checkpoint import CheckpointError, load_weights
from prefalign.data.batches import TensorBatches
from prefalign.data.datamodules import NoisyMNISTDataModule
from prefalign.data.mined_pairs import MinedPairs
from prefalign.models.loading import load_model
from prefalign.validation import check_in_range


def least_typical_first(indices: Tensor, features: Tensor) -> Tensor:
    """``indices`` ordered by the distance of their ``features`` from the mean of theirs, farthest first."""
    centred = features[indices].float() - features[indices].float().mean(0)
    return indices[centred.norm(dim=1).argsort(descending=True)]


def rank_samples(
    p_class: Tensor,
    correct: Tensor,
    labels: Tensor,
    num_classes: int,
    accept_above: float,
    reject_below: float,
    pairs_per_loser: int,
    winners_by: str = "confidence",
    images: Tensor | None = None,
    features: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Indices (winner, loser) of pairs of samples of the same class.

    Winners: the judge sees the requested class with p(c | x) ≥ ``accept_above``. Losers: it sees another class, or
    p(c | x) < ``reject_below``. Each loser meets ``pairs_per_loser`` distinct winners of its class, chosen by
    ``winners_by``:

    * ``"confidence"``: the worst loser meets the best winner, the next worst the next best (cycling through the
      winners when they are fewer);
    * ``"nearest"``: each loser meets the winners closest to it in pixel space (``images`` needed). The idea: pairs that
      differ in what makes the digit wrong rather than in style would not pull the policy towards the class's most
      prototypical digits;
    * ``"spread"``: as ``confidence``, but the winners the losers meet are spread evenly over the confidence ranks of
      every accepted sample of the class rather than taken from its top, so that RPO's NLL anchor covers the
      accepted samples' styles, not only the most prototypical ones;
    * ``"atypical"``: as ``confidence``, but the accepted samples are ranked by their distance from the mean of the
      class's accepted samples in the judge's ``features``, farthest first: the winners are the least typical digits
      the judge still accepts, so that DPO, which raises the winners' likelihood above the reference's, pulls away
      from the class's most typical digits rather than towards them.

    Losers are usually far fewer than winners, so with ``confidence`` only the most confident winners are used. On
    MNIST no alternative clearly beat it: ``nearest`` removed fewer errors for the same diversity, and ``spread`` and
    ``atypical`` moved along nearly the same error-for-diversity curve as a smaller RPO weight
    (docs/families/diffusion.md, "What the runs say")."""
    if winners_by not in ("confidence", "nearest", "spread", "atypical"):
        raise ValueError(f"winners_by={winners_by!r}: choose 'confidence', 'nearest', 'spread' or 'atypical'.")
    if winners_by == "nearest" and images is None:
        raise ValueError("winners_by='nearest' needs the images")
    if winners_by == "atypical" and features is None:
        raise ValueError("winners_by='atypical' needs the judge's features")
    win = correct & (p_class >= accept_above)
    lose = ~correct | (p_class < reject_below)
    winners, losers = [], []
    for c in range(num_classes):
        won = torch.nonzero(win & (labels == c)).squeeze(1)
        lost = torch.nonzero(lose & (labels == c)).squeeze(1)
        if len(won) == 0 or len(lost) == 0:
            continue
        lost = lost[p_class[lost].argsort()]
        k = min(pairs_per_loser, len(won))
        if winners_by == "nearest":
            # [losers, winners] of one class
            distances = torch.cdist(images[lost].flatten(1).float(), images[won].flatten(1).float())
            winners.append(won[distances.topk(k, dim=1, largest=False).indices].flatten())
        else:
            if winners_by == "atypical":
                won = least_typical_first(won, features)
            else:
                won = won[p_class[won].argsort(descending=True)]
            # loser i meets slots i·k … i·k+k−1
            slots = (torch.arange(len(lost)).unsqueeze(1) * k + torch.arange(k)).flatten()
            if winners_by == "spread" and len(slots) < len(won):
                slots = slots * len(won) // len(slots)  # strictly increasing, so a loser's winners stay distinct
            winners.append(won[slots % len(won)])
        losers.append(lost.repeat_interleave(k))
    if not winners:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(winners), torch.cat(losers)


def style_pairs(
    p_class: Tensor,
    correct: Tensor,
    labels: Tensor,
    features: Tensor,
    num_classes: int,
    accept_above: float,
    per_class: int,
) -> tuple[Tensor, Tensor]:
    """Indices (winner, loser) of pairs between two *accepted* samples of a class (right, p(c | x) ≥ ``accept_above``):
    ranked by distance from the mean of the class's accepted samples in the judge's ``features``, the i-th farthest
    wins over the i-th nearest, for ``per_class`` pairs (at most half the class's accepted samples). A preference for
    the less typical of two right digits: DPO's pull towards the most typical digits of a class, measured as a loss of
    diversity among the right samples, is what these pairs push against."""
    accepted = correct & (p_class >= accept_above)
    winners, losers = [], []
    for c in range(num_classes):
        idx = torch.nonzero(accepted & (labels == c)).squeeze(1)
        k = min(per_class, len(idx) // 2)
        if k == 0:
            continue
        ranked = least_typical_first(idx, features)
        winners.append(ranked[:k])
        losers.append(ranked.flip(0)[:k])
    if not winners:
        return torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long)
    return torch.cat(winners), torch.cat(losers)


@torch.no_grad()
def mine_image_pairs(
    reference: nn.Module,
    schedule,
    judge: nn.Module,
    per_class: int,
    num_classes: int,
    steps: int,
    guidance: float,
    seed: int,
    accept_above: float,
    reject_below: float,
    pairs_per_loser: int,
    device: torch.device,
    bf16: bool = False,
    winners_by: str = "confidence",
    style_pairs_per_class: int = 0,
) -> dict[str, Tensor]:
    """Sample ``per_class`` images of each class from ``reference`` (DDIM from noise seeded with ``seed``), judge them and pair
    them up (:func:`rank_samples`, then ``style_pairs_per_class`` pairs per class of :func:`style_pairs`). Images are
    returned in [0, 1], like every image in prefalign. ``bf16`` runs the denoiser under bf16 autocast, as a bf16-mixed
    run samples during validation (the DDIM update stays fp32)."""
    from prefalign.families.denoiser.denoising import null_label_of
    from prefalign.families.denoiser.judge import judge_scores
    from prefalign.families.denoiser.sampling import ddim_sample, initial_noise, per_class_labels

    labels = per_class_labels(per_class, num_classes).to(device)
    noise = initial_noise(len(labels), seed).to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        images = (
            ddim_sample(reference.to(device), schedule, labels, noise, steps, guidance, null_label_of(reference)) + 1
        ) / 2
    scores = judge_scores(judge.to(device), images)
    # judged on the sampling device; paired up on the CPU, where the cached pairs live
    p, correct, features = scores.p_class(labels).cpu(), scores.correct(labels).cpu(), scores.features.cpu()
    images, labels = images.cpu(), labels.cpu()
    winners, losers = rank_samples(
        p, correct, labels, num_classes, accept_above, reject_below, pairs_per_loser, winners_by, images, features
    )
    if style_pairs_per_class > 0:
        more = style_pairs(p, correct, labels, features, num_classes, accept_above, style_pairs_per_class)
        winners, losers = torch.cat([winners, more[0]]), torch.cat([losers, more[1]])
    return {
        "chosen": images[winners],
        "rejected": images[losers],
        "y": labels[winners],
        "chosen_p": p[winners],
        "rejected_p": p[losers],
        "pool_accuracy": correct.float().mean(),
        "pool_p_class": p.float().mean(),
    }


class DiffusionPreferenceDataModule(MinedPairs, NoisyMNISTDataModule):
    """MNIST (for evaluation: the clean validation and test images) plus Diffusion-DPO pairs mined from the reference.

    Mining (Wallace et al., 2023, arXiv:2311.12908, here with a judge in place of people): the frozen reference draws
    ``per_class`` images of every class from noise seeded with ``seed``; the frozen *mining judge* (trained on the clean
    training images; see :mod:`prefalign.families.denoiser.judge`) scores p(c | x); within a class a confidently right
    sample wins over one the judge rejects (:func:`rank_samples`). Pairs are cached under a fingerprint of (reference
    weights, judge, data, every setting here), as the MNIST and text pairs are.

    Training batches: ``chosen``/``rejected [B, 1, 28, 28]`` in [0, 1] and their class ``y``.

    Args:
        per_class: reference samples drawn per class for mining.
        sample_steps: DDIM steps of the mining samples.
        guidance: classifier-free guidance scale of the mining samples (1: none).
        mining_judge_arch: the mining judge's architecture (``lenet`` or ``seed_cnn``).
        mining_judge_seed: its training seed (the evaluation judge must differ in seed or architecture).
        judge_dir: where judges are cached.
        judge_min_accuracy: refuse a mining judge whose clean test accuracy is lower.
        accept_above: a winner's minimum p(c | x).
        reject_below: a sample the judge classifies correctly is still a loser below this p(c | x).
        pairs_per_loser: winners each loser is paired with.
        winners_by: which winners a loser meets: the class's most confident (``confidence``), the closest in pixels
            (``nearest``), winners spread over every confidence rank (``spread``) or the accepted samples farthest from
            their class's mean in the mining judge's features (``atypical``); see :func:`rank_samples`.
        style_pairs_per_class: pairs per class between two accepted samples, the less typical winning
            (:func:`style_pairs`); 0: none.
        seed: seed of the mining noise.
        reference_ckpt: the reference weights; default: the model's ``reference_ckpt``.
        cache_dir: where mined pairs are cached.
        (other arguments: see :class:`NoisyMNISTDataModule`)
    """

    def __init__(
        self,
        per_class: int = 256,
        sample_steps: int = 25,
        guidance: float = 1.0,
        mining_judge_arch: str = "lenet",
        mining_judge_seed: int = 1,
        judge_dir: str = "artifacts/judges",
        judge_min_accuracy: float = 0.99,
        accept_above: float = 0.9,
        reject_below: float = 0.5,
        pairs_per_loser: int = 1,
        winners_by: Literal["confidence", "nearest", "spread", "atypical"] = "confidence",
        style_pairs_per_class: int = 0,
        seed: int = 0,
        reference_ckpt: str | None = None,
        cache_dir: str = "artifacts/pairs",
        data_dir: str | None = None,
        source: Literal["mnist", "synthetic"] = "mnist",
        batch_size: int = 64,
        eval_batch_size: int = 1000,
        val_size: int | None = None,
        split_seed: int = 0,
        synthetic_size: tuple[int, int] = (2000, 500),
    ) -> None:
        super().__init__(
            data_dir=data_dir,
            source=source,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            val_size=val_size,
            split_seed=split_seed,
            train_on="clean",
            synthetic_size=synthetic_size,
        )
        check_in_range("per_class", per_class, 1)
        check_in_range("sample_steps", sample_steps, 1)
        check_in_range("pairs_per_loser", pairs_per_loser, 1)
        check_in_range("accept_above", accept_above, 0.0, 1.0)
        check_in_range("reject_below", reject_below, 0.0, accept_above)
        self.per_class, self.sample_steps, self.guidance = per_class, sample_steps, guidance
        self.mining_judge = (mining_judge_arch, mining_judge_seed)
        self.judge_dir, self.judge_min_accuracy = judge_dir, judge_min_accuracy
        self.accept_above, self.reject_below, self.pairs_per_loser, self.seed = (
            accept_above,
            reject_below,
            pairs_per_loser,
            seed,
        )
        self.winners_by = winners_by
        check_in_range("style_pairs_per_class", style_pairs_per_class, 0)
        self.style_pairs_per_class = style_pairs_per_class
        self.init_mining(reference_ckpt, cache_dir)

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if stage not in (None, "fit") or self.pairs:
            return
        path = self.mining_reference("configs/diffusion_pretrain.yaml writes artifacts/reference/denoiser.pt")
        schedule_args = load_weights(path)["meta"].get("noise_schedule")
        if schedule_args is None:
            raise CheckpointError(
                f"{path} is not a denoiser weights file (it records no noise schedule); "
                "train the reference with configs/diffusion_pretrain.yaml."
            )
        family = getattr(getattr(getattr(self, "trainer", None), "lightning_module", None), "family", None)
        if getattr(family, "schedule_args", schedule_args) != schedule_args:
            raise ValueError(
                f"the reference {path} was trained with noise schedule {schedule_args}, but model.family has "
                f"{family.schedule_args}; set the family's schedule arguments to the reference's."
            )
        self._schedule_args = schedule_args
        cached = self._mine(path, self.seed)
        if len(cached["y"]) == 0:
            raise ValueError(
                "no image pairs were mined: within no class did the mining judge both accept and reject a reference sample. "
                "Raise data.init_args.per_class, or loosen accept_above / reject_below."
            )
        self._attach(cached)

    def remine(self, miner_path: str) -> None:
        """Replace the pairs with ones mined from ``miner_path`` (the current policy's weights): iterative / online DPO
        (:class:`prefalign.callbacks.IterativeMining`). Round k draws its samples from noise seeded with ``seed + k``, so
        every round meets new starting noise; the noise schedule is the reference's. If the miner's samples give no
        pairs, the previous pairs are kept, with a warning."""
        self.miners.append(miner_path)
        cached = self._mine(miner_path, self.seed + len(self.miners))
        if len(cached["y"]) == 0:
            rank_zero_warn(
                f"re-mining with {miner_path} found no pairs; keeping the previous {len(self.pairs['y'])} pairs."
            )
            return
        self._attach(cached)

    def _mine(self, path: str, seed: int) -> dict:
        """The pairs mined from the denoiser weights at ``path`` with noise ``seed``, from the cache when it has them."""
        from prefalign.families.denoiser.judge import ensure_judge
        from prefalign.families.denoiser.schedule import NoiseSchedule

        trainer = getattr(self, "trainer", None)
        bf16 = "bf16" in str(
            getattr(trainer, "precision", "")
        )  # sample as the run samples: 2-3x faster on a CPU with bf16
        arch, judge_seed = self.mining_judge
        key = {
            "data": self.data_fingerprint(),
            "judge": [arch, judge_seed],
            "per_class": self.per_class,
            "steps": self.sample_steps,
            "guidance": self.guidance,
            "seed": seed,
            "accept_above": self.accept_above,
            "reject_below": self.reject_below,
            "pairs_per_loser": self.pairs_per_loser,
            "bf16": bf16,
            "format": 1,
        }
        if self.winners_by != "confidence":  # the default leaves the key (and every existing cache file) as it was
            key["winners_by"] = self.winners_by
        if self.style_pairs_per_class:
            key["style_pairs_per_class"] = self.style_pairs_per_class

        built = []  # whether this run mined (else it read the pairs from the cache)

        # Building the models draws from the global RNG: the run's training noise must not depend on the pair cache.
        @torch.random.fork_rng(devices=[])
        def mine() -> dict:
            built.append(True)
            judge = ensure_judge(arch, judge_seed, self, self.judge_dir, self.judge_min_accuracy)
            rank_zero_info(
                f"Mining image pairs: {self.per_class} samples per class from {path} (noise seed {seed}), judged by {arch} (seed {judge_seed}) ..."
            )
            started = time.monotonic()
            mined = mine_image_pairs(
                load_model(path).eval(),
                NoiseSchedule(**self._schedule_args),
                judge,
                self.per_class,
                self.num_classes,
                self.sample_steps,
                self.guidance,
                seed,
                self.accept_above,
                self.reject_below,
                self.pairs_per_loser,
                self._device(),
                bf16,
                self.winners_by,
                self.style_pairs_per_class,
            )
            mined["seconds"] = torch.tensor(time.monotonic() - started)
            return mined

        cached = self.cached_pairs("image-pairs", path, key, mine)
        cached["from_cache"] = not built
        return cached

    def _attach(self, cached: dict) -> None:
        device = self._device()
        self.pairs = {k: cached[k].to(device) for k in ("chosen", "rejected", "y")}
        self.mining_stats = {
            "mining/pairs": float(len(cached["y"])),
            "mining/pool_size": float(self.per_class * self.num_classes),
            "mining/reference_judge_accuracy": float(cached["pool_accuracy"]),
            "mining/reference_judge_p_class": float(cached["pool_p_class"]),
            "mining/chosen_p_class": float(cached["chosen_p"].mean()),
            "mining/rejected_p_class": float(cached["rejected_p"].mean()),
            # what mining cost when the pairs were made, and whether this run read them from the cache
            # (then its fit time does not include it: scripts/diffusion_results.py adds it back)
            "mining/seconds": float(cached["seconds"]),
            "mining/from_cache": float(cached["from_cache"]),
        }
        rank_zero_info(
            f"Mined {len(cached['y'])} image pairs from {self.per_class * self.num_classes} samples "
            f"(mining judge accuracy on them {float(cached['pool_accuracy']):.4f}; mining took {float(cached['seconds']):.0f} s)."
        )

    def train_dataloader(self) -> TensorBatches:
        return self._loader(self.pairs, train=True)
