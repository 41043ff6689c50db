"""DenoiserFamily: class-conditional diffusion models; a "response" is an image, its log-likelihood a denoising error."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor, nn

from prefalign.families.base import Forward
from prefalign.families.denoiser.denoising import denoising_logp, null_label_of, to_model_range
from prefalign.families.denoiser.evaluation import DenoiserEvaluation
from prefalign.families.denoiser.schedule import NoiseSchedule
from prefalign.objectives.base import PairLogps
from prefalign.validation import check_in_range


class DenoiserFamily(DenoiserEvaluation):
    """Class-conditional ε-prediction denoisers (:class:`~prefalign.models.ConditionalUNet`): ``model(x_t, t, y) -> ε``.

    The shared objectives train it unchanged, because this family hands them log-likelihood *surrogates*:

    - **SFT** on ``{"x", "y"}`` (images in [0, 1]) is the DDPM loss (Ho et al., 2020): one random timestep and noise
      per image; its "log-prob" is ``−½·mean-pixel ‖ε − ε_θ‖²`` (:func:`denoising_logp`), so SFT's ``−log p`` is half
      the usual MSE. With ``label_dropout`` > 0, that fraction of labels is replaced by the null class, which trains
      the unconditional model classifier-free guidance needs (Ho & Salimans, 2022, arXiv:2207.12598).
    - **DPO family** on ``{"chosen", "rejected", "y"}``: one (t, ε) per pair, shared by winner and loser and by
      policy and reference, as in the paper and diffusers' ``train_diffusion_dpo.py``. With that surrogate the
      shared :class:`~prefalign.objectives.DPO` computes ``−log σ(−½β·((‖ε−ε_θ(x^w_t)‖² − ‖ε−ε_θ(x^l_t)‖²) −
      (‖ε−ε_ref(x^w_t)‖² − ‖ε−ε_ref(x^l_t)‖²)))``, diffusers' loss exactly, with the batch mean outside the log-sigmoid.
    - No ``true_logprob`` (the surrogate is no normalised probability: ORPO, CPO's and KTO's log(1−p) are refused),
      no ``exact_kl``, no ``sampling`` (PPO-lite would need per-step log-probs of the sampler's trajectory).

    Args:
        num_timesteps: diffusion steps T of the forward process.
        schedule: ``linear`` (DDPM's β from ``beta_start`` to ``beta_end``) or ``cosine``.
        beta_start: first β of the linear schedule.
        beta_end: last β of the linear schedule.
        label_dropout: fraction of SFT labels replaced by the null class (0 disables guidance training).
        pair_timesteps: the fractions (low, high) of [0, T) from which a *pair's* t is drawn (SFT keeps all of [0, T)).
            A high-noise range puts the preference signal where sampling decides which digit appears.
        (evaluation arguments: see :class:`DenoiserEvaluation`)
    """

    capabilities = frozenset()

    def __init__(
        self,
        num_timesteps: int = 1000,
        schedule: Literal["linear", "cosine"] = "linear",
        beta_start: float = 1e-4,
        beta_end: float = 0.02,
        label_dropout: float = 0.1,
        pair_timesteps: tuple[float, float] = (0.0, 1.0),
        sample_steps: int = 25,
        guidance: float = 1.0,
        val_per_class: int = 20,
        test_per_class: int = 100,
        eval_seed: int = 1234,
        mse_buckets: int = 4,
        judge_arch: str = "lenet",
        judge_seed: int = 2,
        judge_dir: str = "artifacts/judges",
        judge_min_accuracy: float = 0.99,
        grid_per_class: int = 8,
    ) -> None:
        super().__init__(
            NoiseSchedule(num_timesteps, schedule, beta_start, beta_end),
            sample_steps=sample_steps,
            guidance=guidance,
            val_per_class=val_per_class,
            test_per_class=test_per_class,
            eval_seed=eval_seed,
            mse_buckets=mse_buckets,
            judge_arch=judge_arch,
            judge_seed=judge_seed,
            judge_dir=judge_dir,
            judge_min_accuracy=judge_min_accuracy,
            grid_per_class=grid_per_class,
        )
        check_in_range("label_dropout", label_dropout, 0.0, 1.0)
        self.schedule_args = {
            "num_timesteps": num_timesteps,
            "kind": schedule,
            "beta_start": beta_start,
            "beta_end": beta_end,
        }
        self.label_dropout = label_dropout
        low, high = pair_timesteps
        if not 0.0 <= low < high <= 1.0:
            raise ValueError(
                f"pair_timesteps must be fractions 0 <= low < high <= 1 of the forward process, got {pair_timesteps}"
            )
        first = round(low * num_timesteps)
        self.pair_t_range = (first, max(round(high * num_timesteps), first + 1))  # never empty, however narrow

    def check_config(self, policy: nn.Module, datamodule: Any) -> None:
        null_label_of(policy)  # a class-conditional denoiser, or a clear error naming model.backbone
        mining = getattr(datamodule, "mining_judge", None)
        if mining is not None and tuple(mining) == (self.judge_arch, self.judge_seed):
            raise ValueError(
                f"the mining judge and the evaluation judge are the same model ({self.judge_arch}, seed {self.judge_seed}): "
                "a policy would be scored by the judge it was trained against. Change data.init_args.mining_judge_seed "
                "or model.family.init_args.judge_seed."
            )

    def weights_meta(self) -> dict[str, Any]:
        return {"noise_schedule": dict(self.schedule_args)}

    def pair_logps(
        self,
        policy: Forward,
        reference: nn.Module | None,
        batch: dict[str, Tensor],
        recompute_reference: bool = False,
        length_normalized: bool = False,
        wpo_weights: bool = False,
    ) -> PairLogps:
        labels = batch["y"]
        if "chosen" in batch:
            images = torch.cat([batch["chosen"], batch["rejected"]])
            labels = torch.cat([labels, labels])
        else:
            images = batch["x"]
            if self.label_dropout > 0:
                drop = torch.rand(labels.shape, device=labels.device) < self.label_dropout
                labels = torch.where(drop, torch.full_like(labels, null_label_of(policy)), labels)
        n = len(batch["y"])
        paired = len(images) > n
        low, high = self.pair_t_range if paired else (0, None)
        t = self.noise_schedule.sample_timesteps(n, device=images.device, low=low, high=high)
        noise = torch.randn((n, *images.shape[1:]), device=images.device)
        if paired:  # winner and loser share (t, ε): the comparison is between images, not noise draws
            t, noise = torch.cat([t, t]), torch.cat([noise, noise])
        x_t = self.noise_schedule.add_noise(to_model_range(images), noise, t)
        logp = denoising_logp(policy, x_t, t, labels, noise)
        ref = None
        if reference is not None:
            with torch.no_grad():
                ref = denoising_logp(reference, x_t, t, labels, noise)
        if not paired:
            return PairLogps(policy_chosen=logp, policy_rejected=None, reference_chosen=ref, reference_rejected=None)
        return PairLogps(
            policy_chosen=logp[:n],
            policy_rejected=logp[n:],
            reference_chosen=ref[:n] if ref is not None else None,
            reference_rejected=ref[n:] if ref is not None else None,
        )
