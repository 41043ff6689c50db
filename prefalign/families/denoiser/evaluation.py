"""The denoiser family's evaluation: denoising error on held-out images, and judged samples from fixed noise.

Every validation/test epoch:

* ``eps_mse`` — the ε-prediction error on the split's real images at seeded (t, ε), overall and by timestep bucket
  (``eps_mse_t0`` is the least noisy quarter of the schedule);
* samples — ``{val,test}_per_class`` images per class drawn by DDIM from noise seeded with ``eval_seed``, the same
  noise for the policy and the reference, scored by the frozen *evaluation* judge: ``error_rate`` (the judge does
  not see the requested class), ``p_class`` (mean p(c | x)), ``fid`` (Fréchet distance to the split's real images in
  the judge's penultimate features), ``diversity`` (mean within-class feature distance) and, with a reference,
  ``win_rate`` (the policy's p(c | x) beats the reference's on the same noise; ties count half). The reference's
  samples never change, so they are drawn and logged (``*/reference/*``) once per stage;
* ``real/diversity`` — the within-class diversity of the split's real images, once per stage: the scale ``diversity``
  reads against. A wrong digit lies far from its requested class, so samples with errors score *above* real digits;
  ``diversity_correct`` is the diversity of the samples the judge reads as their requested class only.

Under DDP each rank draws its share of the samples and the scores are gathered, so every rank logs the same numbers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics.aggregation import MeanMetric

from prefalign.families.base import ModelFamily
from prefalign.families.denoiser.denoising import denoising_logp, null_label_of, to_model_range
from prefalign.families.denoiser.judge import ensure_judge, judge_scores
from prefalign.families.denoiser.metrics import frechet_distance, win_rate, within_class_diversity
from prefalign.families.denoiser.sampling import ddim_sample, initial_noise, per_class_labels, tile
from prefalign.families.denoiser.schedule import NoiseSchedule
from prefalign.validation import check_in_range

STAGES = ("val", "test")


def gather(module: Any, tensor: Tensor) -> Tensor:
    """All ranks' rows of ``tensor`` concatenated (shards may differ in length); the tensor itself on one process."""
    if module.trainer.world_size == 1:
        return tensor
    from torchmetrics.utilities.distributed import gather_all_tensors

    return torch.cat(gather_all_tensors(tensor.contiguous()))


class SampleScores:
    """One model's judged samples on this rank's share of the fixed noise (``images`` kept for the grid)."""

    def __init__(self, labels: Tensor, images: Tensor, p_class: Tensor, correct: Tensor, features: Tensor) -> None:
        self.labels, self.images, self.p_class, self.correct, self.features = labels, images, p_class, correct, features


class DenoiserEvaluation(ModelFamily):
    """Evaluation for :class:`~prefalign.families.denoiser.DenoiserFamily` (see the module docstring for the metrics).

    Args:
        noise_schedule: the family's noise schedule (``eps_mse`` noises the real images with it; samples follow it).
        sample_steps: DDIM steps of evaluation samples.
        guidance: classifier-free guidance scale of evaluation samples (1: none).
        val_per_class: samples per class at each validation (0: no sample metrics during training).
        test_per_class: samples per class at test.
        eval_seed: seed of the evaluation noise (samples) and of the (t, ε) draws of ``eps_mse``.
        mse_buckets: timestep buckets of ``eps_mse``.
        judge_arch: architecture of the evaluation judge (``lenet`` or ``seed_cnn``).
        judge_seed: its training seed (must differ from the mining judge's, or the architecture must).
        judge_dir: where judges are cached (trained on the data module's clean training images when missing).
        judge_min_accuracy: refuse a judge whose clean test accuracy is lower.
        grid_per_class: samples per class in the logged grid (policy row above reference row).
    """

    summary_keys = ("error_rate", "p_class", "fid", "diversity", "win_rate", "eps_mse")
    main_metric = "val/error_rate"

    def __init__(
        self,
        noise_schedule: NoiseSchedule,
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
        super().__init__()
        check_in_range("sample_steps", sample_steps, 1)
        check_in_range("guidance", guidance, 0.0)
        check_in_range("val_per_class", val_per_class, 0)
        check_in_range("test_per_class", test_per_class, 0)
        check_in_range("mse_buckets", mse_buckets, 1)
        self.noise_schedule = noise_schedule
        self.sample_steps, self.guidance = sample_steps, guidance
        self.per_class = {"val": val_per_class, "test": test_per_class}
        self.eval_seed, self.mse_buckets, self.grid_per_class = eval_seed, mse_buckets, grid_per_class
        self.judge_arch, self.judge_seed, self.judge_dir, self.judge_min_accuracy = (
            judge_arch,
            judge_seed,
            judge_dir,
            judge_min_accuracy,
        )
        self.mse = nn.ModuleDict(
            {f"{s}_{b}": MeanMetric() for s in STAGES for b in ["all", *map(str, range(mse_buckets))]}
        )
        self.reference_mse = nn.ModuleDict({s: MeanMetric() for s in STAGES})
        object.__setattr__(self, "judge", None)  # a frozen tool, not part of the model: never saved or DDP-wrapped
        self._reference: dict[str, SampleScores] = {}
        self._reference_logged: set[str] = set()
        self._real: dict[str, list[tuple[Tensor, Tensor]]] = {}
        self._real_features: dict[str, tuple[Tensor, Tensor]] = {}  # features, labels
        self._generators: dict[str, torch.Generator] = {}

    # ------------------------------------------------------------------ setup
    def setup(self, module: Any, stage: str) -> None:
        trainer = module.trainer
        datamodule = getattr(trainer, "datamodule", None)
        if datamodule is None or not hasattr(datamodule, "data_fingerprint"):
            raise ValueError(
                "the denoiser family evaluates with an MNIST data module (prefalign.data.NoisyMNISTDataModule or "
                "prefalign.data.DiffusionPreferenceDataModule); set data.class_path."
            )
        if self.judge is None:
            if trainer.global_rank == 0:  # rank 0 trains a missing judge; the others wait and load it
                ensure_judge(self.judge_arch, self.judge_seed, datamodule, self.judge_dir, self.judge_min_accuracy)
            trainer.strategy.barrier("prefalign-judge")
            object.__setattr__(
                self,
                "judge",
                ensure_judge(self.judge_arch, self.judge_seed, datamodule, self.judge_dir, self.judge_min_accuracy),
            )

    def _judge(self, device: torch.device) -> nn.Module:
        if next(self.judge.parameters()).device != device:
            self.judge.to(device)
        return self.judge

    def teardown(self, stage: str) -> None:
        self._generators.clear()

    # ------------------------------------------------------------------ per batch: denoising error, real features
    def _mse_draws(self, stage: str, n: int, shape: torch.Size, device: torch.device) -> tuple[Tensor, Tensor]:
        """Seeded (t, ε) for the next ``n`` evaluation images: the same draws every epoch, so eps_mse is comparable."""
        g = self._generators.get(stage)
        if g is None:
            g = self._generators[stage] = torch.Generator().manual_seed(self.eval_seed)
        t = torch.randint(0, self.noise_schedule.num_timesteps, (n,), generator=g)
        return t.to(device), torch.randn((n, *shape), generator=g).to(device)

    @torch.no_grad()
    def eval_step(self, module: Any, batch: dict[str, Tensor], stage: str) -> None:
        images, labels = batch["x_clean"], batch["y"]
        t, noise = self._mse_draws(stage, len(labels), images.shape[1:], images.device)
        x_t = self.noise_schedule.add_noise(to_model_range(images), noise, t)
        mse = -2 * denoising_logp(module.policy_forward, x_t, t, labels, noise)
        self.mse[f"{stage}_all"].update(mse)
        bucket = (t * self.mse_buckets) // self.noise_schedule.num_timesteps
        for b in range(self.mse_buckets):  # weights, not boolean indexing: no host sync per batch
            self.mse[f"{stage}_{b}"].update(mse, weight=(bucket == b).float())
        if module.reference is not None and stage not in self._reference_logged:
            self.reference_mse[stage].update(-2 * denoising_logp(module.reference, x_t, t, labels, noise))
        if stage not in self._real_features and not module.trainer.sanity_checking:
            self._real.setdefault(stage, []).append((judge_scores(self._judge(images.device), images).features, labels))

    # ------------------------------------------------------------------ per epoch: samples
    def _my_share(self, module: Any, per_class: int, num_classes: int) -> tuple[Tensor, Tensor]:
        labels = per_class_labels(per_class, num_classes)
        noise = initial_noise(len(labels), self.eval_seed)
        rank, world = module.trainer.global_rank, module.trainer.world_size
        return labels[rank::world].to(module.device), noise[rank::world].to(module.device)

    def _score(self, module: Any, model: Any, labels: Tensor, noise: Tensor) -> SampleScores:
        with module.trainer.precision_plugin.forward_context():  # epoch-end hooks run outside the step's autocast
            images = ddim_sample(
                model,
                self.noise_schedule,
                labels,
                noise,
                self.sample_steps,
                self.guidance,
                null_label_of(module.policy),
            )
        images01 = (images + 1) / 2
        scores = judge_scores(self._judge(images.device), images01)
        return SampleScores(labels, images01, scores.p_class(labels), scores.correct(labels), scores.features)

    def _summary(self, module: Any, scores: SampleScores, real: Tensor) -> dict[str, float]:
        labels, features, correct = (
            gather(module, scores.labels),
            gather(module, scores.features),
            gather(module, scores.correct),
        )
        summary = {
            "error_rate": 1.0 - float(correct.float().mean()),
            "p_class": float(gather(module, scores.p_class).mean()),
            "fid": frechet_distance(features, real),
            "diversity": within_class_diversity(features, labels),
        }
        if (
            len(labels) and int(torch.bincount(labels[correct], minlength=1).max()) >= 2
        ):  # some class has two right samples
            summary["diversity_correct"] = within_class_diversity(features[correct], labels[correct])
        return summary

    def eval_epoch_end(self, module: Any, stage: str) -> None:
        trainer = module.trainer
        if trainer.sanity_checking:
            for metric in self.mse.values():
                metric.reset()
            self.reference_mse[stage].reset()
            self._generators.pop(stage, None)
            return
        logs = {f"{stage}/eps_mse": self.mse[f"{stage}_all"].compute()}
        logs.update({f"{stage}/eps_mse_t{b}": self.mse[f"{stage}_{b}"].compute() for b in range(self.mse_buckets)})
        with_ref = module.reference is not None
        if with_ref and stage not in self._reference_logged:
            logs[f"{stage}/reference/eps_mse"] = self.reference_mse[stage].compute()
        for metric in [*self.mse.values(), self.reference_mse[stage]]:
            metric.reset()
        self._generators.pop(stage, None)
        if stage not in self._real_features and stage in self._real:
            features, labels = zip(*self._real.pop(stage))
            self._real_features[stage] = (gather(module, torch.cat(features)), gather(module, torch.cat(labels)))
            logs[f"{stage}/real/diversity"] = within_class_diversity(*self._real_features[stage])
        per_class = self.per_class[stage]
        if per_class > 0 and stage in self._real_features:
            num_classes = getattr(trainer.datamodule, "num_classes", 10)
            labels, noise = self._my_share(module, per_class, num_classes)
            policy = self._score(module, module.policy_forward, labels, noise)
            real = self._real_features[stage][0]
            logs.update({f"{stage}/{k}": v for k, v in self._summary(module, policy, real).items()})
            reference = None
            if with_ref:
                reference = self._reference.get(stage)
                if reference is None:
                    reference = self._reference[stage] = self._score(module, module.reference, labels, noise)
                if stage not in self._reference_logged:
                    logs.update(
                        {f"{stage}/reference/{k}": v for k, v in self._summary(module, reference, real).items()}
                    )
                logs[f"{stage}/win_rate"] = win_rate(gather(module, policy.p_class), gather(module, reference.p_class))
            if module.log_figures and trainer.is_global_zero:
                self._log_grid(module, stage, policy, reference, num_classes)
        module.log_dict({k: float(v) for k, v in logs.items()})
        if with_ref:
            self._reference_logged.add(stage)

    def _log_grid(
        self, module: Any, stage: str, policy: SampleScores, reference: SampleScores | None, num_classes: int
    ) -> None:
        from prefalign.viz.figures import new_figure
        from prefalign.viz.images import log_figure

        k = self.grid_per_class
        models = (policy, reference) if reference is not None else (policy,)
        rows = []
        for c in range(num_classes):
            for scores in models:
                row = scores.images[scores.labels == c][:k, 0].float().cpu()
                rows.append(
                    torch.cat([row, row.new_zeros(k - len(row), *row.shape[1:])])
                )  # a short class is padded with black
        grid = torch.stack(rows)  # [rows, k, 28, 28] → one image: a single imshow instead of one axes per sample
        tiled = tile(grid)
        fig = new_figure(0.45 * k + 1.0, 0.45 * len(rows) + 0.5)
        ax = fig.subplots()
        ax.imshow(tiled.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([(i + 0.5) * grid.shape[2] for i in range(len(rows))])
        ax.set_yticklabels(
            [
                f"{c} {'policy' if j == 0 else 'ref'}" if len(models) > 1 else str(c)
                for c in range(num_classes)
                for j in range(len(models))
            ],
            fontsize=7,
        )
        ax.set_title("same noise per column" + ("; policy above reference" if len(models) > 1 else ""), fontsize=8)
        log_figure(module.trainer, f"{stage}/samples", fig, module.global_step)
