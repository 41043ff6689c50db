"""Network dreams (seed 003): optimise the *input* of a frozen classifier until it predicts a chosen class.

Starting from seeded Gaussian noise, a batch of images is trained with Adam/SGD so that the network
assigns each image its target: a class id (cross-entropy) or a soft distribution over classes ("hybrids",
KL(target ‖ softmax)). An optional ``lambda_l2 * x.pow(2).mean()`` penalty (the seed's task 3) trades
confidence for smoother, darker images.

Differences from the notebook, on purpose:
- our backbones take pixels in [0, 1] (no MNIST normalisation), so the default clamp is (0, 1) instead of
  the notebook's (-1, 1) in normalised space; the initial noise is clamped too so the model only ever sees
  valid inputs;
- the noise comes from a local ``torch.Generator``: the same seed gives the same dream regardless of the
  global RNG state, and a sweep/comparison can start every run from the very same batch.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn
from torch.nn import functional as F

from prefalign.viz.figures import image_grid_figure, new_figure
from prefalign.viz.images import save_figure

__all__ = [
    "DreamResult",
    "DEFAULT_L2_VALUES",
    "initial_noise",
    "dream",
    "l2_sweep",
    "hybrid_targets",
    "parse_hybrid",
    "compare_dreams",
    "comparison_figure",
    "sweep_figure",
    "confidence_figure",
    "dream_titles",
    "render_frame",
    "save_dream_outputs",
]

DEFAULT_L2_VALUES: tuple[float, ...] = (0.001, 0.01, 0.1, 1.0, 10.0)  # the seed's exponential progression


@dataclass
class DreamResult:
    """The outcome of one :func:`dream` run. ``T`` is the number of recorded states.

    Attributes:
        images: final images ``[N,1,28,28]`` (float32, CPU).
        frames: recorded images ``[T,N,1,28,28]`` (float16 to save memory); ``frames[0]`` is the start
            and ``frames[-1]`` the final state.
        confidence: ``[T,N]`` probability of the target class; for soft targets, the probability mass on the
            target's classes (see ``probs`` for each class).
        probs: ``[T,N,C]`` full softmax at every recorded state.
        loss: ``[T]`` total loss (task + L2 penalty) at every recorded state.
        steps: ``[T]`` optimisation step of every recorded state (0 = the initial noise).
        targets: the targets, ``[N]`` long or ``[N,C]`` float.
        lambda_l2: the L2 penalty coefficient used.
    """

    images: Tensor
    frames: Tensor
    confidence: Tensor
    probs: Tensor
    loss: Tensor
    steps: Tensor
    targets: Tensor
    lambda_l2: float = 0.0

    @property
    def soft(self) -> bool:
        """True when the targets are distributions (hybrid dreams) rather than class ids."""
        return self.targets.dim() == 2

    @property
    def final_confidence(self) -> Tensor:
        """``[N]`` target confidence of the final images."""
        return self.confidence[-1]


def initial_noise(
    n: int,
    seed: int = 0,
    init_mean: float = 0.5,
    init_std: float = 1.0,
    clamp: tuple[float | None, float | None] | None = (0.0, 1.0),
    shape: tuple[int, ...] = (1, 28, 28),
) -> Tensor:
    """The seeded starting batch ``[n, *shape]``: ``init_mean + init_std * N(0, 1)``, clamped like the dream."""
    gen = torch.Generator().manual_seed(seed)  # local generator: independent of (and harmless to) the global RNG
    x = init_mean + init_std * torch.randn((n, *shape), generator=gen)
    return x.clamp(*clamp) if clamp is not None else x


def _validate_targets(targets: Tensor, num_classes: int) -> Tensor:
    if targets.dim() == 1:
        if targets.dtype.is_floating_point:
            raise ValueError("class-id targets must be an integer tensor [N]; soft targets are float [N, C]")
        bad = (targets < 0) | (targets >= num_classes)
        if bad.any():
            raise ValueError(
                f"targets {targets[bad].tolist()} are out of range for a model with {num_classes} classes "
                f"(valid: 0..{num_classes - 1})"
            )
        return targets.long()
    if targets.dim() == 2:
        if targets.shape[1] != num_classes:
            raise ValueError(f"soft targets have {targets.shape[1]} classes but the model outputs {num_classes}")
        if (targets < 0).any() or not torch.allclose(targets.sum(1), torch.ones(len(targets)), atol=1e-4):
            raise ValueError("soft targets must be non-negative rows summing to 1 (use hybrid_targets to build them)")
        return targets.float()
    raise ValueError(f"targets must be [N] class ids or [N, C] distributions, got shape {tuple(targets.shape)}")


def _confidence(probs: Tensor, targets: Tensor) -> Tensor:
    if targets.dim() == 1:
        return probs.gather(1, targets[:, None]).squeeze(1)
    return (probs * (targets > 0)).sum(1)  # mass on the hybrid's classes


def dream(
    model: nn.Module,
    targets: Tensor,
    steps: int = 200,
    lr: float = 0.1,
    optimizer: str = "adam",
    clamp: tuple[float | None, float | None] | None = (0.0, 1.0),
    lambda_l2: float = 0.0,
    init_std: float = 1.0,
    init_mean: float = 0.5,
    seed: int = 0,
    record_every: int = 1,
    init: Tensor | None = None,
) -> DreamResult:
    """Optimise a batch of inputs so that the frozen ``model`` predicts ``targets``.

    Args:
        model: a classifier mapping ``[B,1,28,28]`` pixels in [0, 1] to ``[B,C]`` logits. It is put in eval
            mode and its parameters get ``requires_grad=False`` for the call; both are restored afterwards and
            its weights are never modified.
        targets: ``[N]`` long class ids (cross-entropy) or ``[N,C]`` float distributions (KL(target ‖ softmax),
            for hybrids; see :func:`hybrid_targets`).
        steps: optimisation steps.
        lr: learning rate of the input optimiser.
        optimizer: ``"adam"`` (scale-free, the seed's choice) or ``"sgd"``. Both losses are batch means as in the
            seed, so with SGD the per-image step shrinks with the batch size; Adam is unaffected.
        clamp: ``(min, max)`` pixel range enforced after every step (and on the initial noise); ``None`` = no clamp.
            The default (0, 1) is the valid pixel range of our backbones (the seed used (-1, 1) in normalised space).
        lambda_l2: weight of the ``x.pow(2).mean()`` penalty added to the task loss (pulls pixels to 0 = background).
        init_std, init_mean: the starting noise is ``init_mean + init_std * N(0, 1)``.
        seed: seed of the starting noise (a local generator: same seed → same images).
        record_every: record a frame/confidence every this many steps (the start and the end are always recorded).
        init: an explicit starting batch ``[N,1,28,28]`` (overrides the noise; used by sweeps and comparisons).
    """
    if steps < 0 or record_every < 1:
        raise ValueError(f"need steps >= 0 and record_every >= 1, got steps={steps}, record_every={record_every}")
    if optimizer not in ("adam", "sgd"):
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    n = len(targets)
    x0 = init if init is not None else initial_noise(n, seed, init_mean, init_std, clamp)
    if len(x0) != n:
        raise ValueError(f"init has {len(x0)} images for {n} targets")

    was_training = model.training
    flags = [(p, p.requires_grad) for p in model.parameters()]
    frames, probs_hist, losses, rec_steps = [], [], [], []
    try:
        model.eval()  # dropout off: the dream must fool the deployed network, not a noisy one
        for p, _ in flags:
            p.requires_grad_(False)  # frozen: no grads accumulate in the model, only the input moves
        # Callers may sit inside no_grad/inference_mode (e.g. a validation hook); the dream needs autograd.
        with torch.inference_mode(False), torch.enable_grad():
            with torch.no_grad():
                num_classes = model(x0[:1].to(device)).shape[-1]
            tgt = _validate_targets(targets.detach().cpu(), num_classes).to(device)
            x = x0.detach().clone().float().to(device).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=lr) if optimizer == "adam" else torch.optim.SGD([x], lr=lr)

            def objective() -> tuple[Tensor, Tensor]:
                logits = model(x)
                log_probs = F.log_softmax(logits.float(), dim=1)
                if tgt.dim() == 1:
                    task = F.nll_loss(log_probs, tgt)
                else:
                    task = F.kl_div(log_probs, tgt, reduction="batchmean")
                return task + lambda_l2 * x.pow(2).mean(), log_probs

            def record(step: int, loss: Tensor, log_probs: Tensor) -> None:
                frames.append(x.detach().to("cpu", torch.float16))
                probs_hist.append(log_probs.detach().exp().cpu())
                losses.append(float(loss.detach()))
                rec_steps.append(step)

            for step in range(steps):
                opt.zero_grad(set_to_none=True)
                loss, log_probs = objective()
                if step % record_every == 0:
                    record(step, loss, log_probs)  # the state *before* this update, so frames[0] is the start
                loss.backward()
                opt.step()
                if clamp is not None:
                    with torch.no_grad():
                        x.clamp_(*clamp)
            with torch.no_grad():
                loss, log_probs = objective()
            record(steps, loss, log_probs)
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(was_training)

    probs = torch.stack(probs_hist)
    tgt_cpu = tgt.cpu()
    conf = torch.stack([_confidence(p, tgt_cpu) for p in probs])
    return DreamResult(
        images=x.detach().float().cpu(),
        frames=torch.stack(frames),
        confidence=conf,
        probs=probs,
        loss=torch.tensor(losses),
        steps=torch.tensor(rec_steps),
        targets=tgt_cpu,
        lambda_l2=float(lambda_l2),
    )


def l2_sweep(
    model: nn.Module,
    targets: Tensor,
    lambdas: Sequence[float] = DEFAULT_L2_VALUES,
    seed: int = 0,
    init_mean: float = 0.5,
    init_std: float = 1.0,
    clamp: tuple[float | None, float | None] | None = (0.0, 1.0),
    **dream_kwargs,
) -> dict[float, DreamResult]:
    """One dream per L2 coefficient, all from the same initial noise (as the seed's single ``initial_dream``),
    so differences between results come from the penalty alone. Extra kwargs go to :func:`dream`."""
    x0 = initial_noise(len(targets), seed, init_mean, init_std, clamp)
    return {float(lam): dream(model, targets, lambda_l2=float(lam), clamp=clamp, init=x0, **dream_kwargs) for lam in lambdas}


def parse_hybrid(spec: str | Sequence | Mapping) -> dict[int, float]:
    """One hybrid spec → ``{class: weight}``.

    Accepted: ``"3:0.5,5:0.5"``; ``"3,5"`` (equal split); ``(3, 5)`` (equal split); ``[(3, 0.7), (5, 0.3)]``;
    ``{3: 0.7, 5: 0.3}``.
    """
    if isinstance(spec, Mapping):
        items = list(spec.items())
    elif isinstance(spec, str):
        parts = [p.strip() for p in spec.split(",") if p.strip()]
        if not parts:
            raise ValueError(f"empty hybrid spec {spec!r}; expected e.g. '3:0.5,5:0.5'")
        try:
            if all(":" in p for p in parts):
                items = [(int(c), float(w)) for c, w in (p.split(":", 1) for p in parts)]
            elif not any(":" in p for p in parts):
                items = [(int(p), 1.0 / len(parts)) for p in parts]
            else:
                raise ValueError("give a weight for every class or for none")
        except ValueError as e:
            raise ValueError(f"bad hybrid spec {spec!r} ({e}); expected e.g. '3:0.5,5:0.5' or '3,5'") from None
    elif isinstance(spec, Iterable):
        entries = list(spec)
        if entries and all(isinstance(e, (int, torch.Tensor)) and not isinstance(e, bool) for e in entries):
            items = [(int(c), 1.0 / len(entries)) for c in entries]
        else:
            items = [(int(c), float(w)) for c, w in entries]
    else:
        raise ValueError(f"cannot read hybrid spec {spec!r}; expected e.g. '3:0.5,5:0.5' or (3, 5)")
    weights: dict[int, float] = {}
    for c, w in items:
        if c in weights:
            raise ValueError(f"class {c} appears twice in hybrid spec {spec!r}")
        weights[c] = w
    return weights


def hybrid_targets(pairs: Sequence, num_classes: int = 10) -> Tensor:
    """Soft targets ``[N, num_classes]`` for hybrid dreams, one row per spec (see :func:`parse_hybrid`).

    Raises ``ValueError`` when a class is out of range, a weight is negative, or weights do not sum to 1.
    """
    if isinstance(pairs, (str, Mapping)):
        pairs = [pairs]  # a single spec is a common slip; accept it
    if len(pairs) == 0:
        raise ValueError("no hybrid specs given")
    rows = torch.zeros(len(pairs), num_classes)
    for i, spec in enumerate(pairs):
        weights = parse_hybrid(spec)
        for c, w in weights.items():
            if not 0 <= c < num_classes:
                raise ValueError(f"class {c} in hybrid spec {spec!r} is out of range 0..{num_classes - 1}")
            if w < 0:
                raise ValueError(f"negative weight {w} for class {c} in hybrid spec {spec!r}")
            rows[i, c] = w
        total = sum(weights.values())
        if not math.isclose(total, 1.0, abs_tol=1e-3):
            raise ValueError(f"weights of hybrid spec {spec!r} sum to {total:g}, not 1")
    return rows / rows.sum(1, keepdim=True)  # remove rounding left by e.g. 0.33/0.33/0.34


def compare_dreams(
    policy: nn.Module,
    reference: nn.Module,
    targets: Tensor,
    seed: int = 0,
    init_mean: float = 0.5,
    init_std: float = 1.0,
    clamp: tuple[float | None, float | None] | None = (0.0, 1.0),
    **dream_kwargs,
) -> tuple[DreamResult, DreamResult]:
    """Dream the same targets in a policy and its reference from the *same* starting noise, so a visible
    difference is a difference between the networks. Returns ``(policy_result, reference_result)``."""
    x0 = initial_noise(len(targets), seed, init_mean, init_std, clamp)
    kwargs = dict(dream_kwargs, clamp=clamp, init=x0)
    return dream(policy, targets, **kwargs), dream(reference, targets, **kwargs)


def _target_classes(result: DreamResult, i: int) -> list[int]:
    t = result.targets[i]
    return [int(t)] if t.dim() == 0 else [int(c) for c in torch.nonzero(t > 0).flatten()]


def dream_titles(result: DreamResult, t: int = -1, class_names: Sequence[str] | None = None) -> list[str]:
    """Per-image titles at recorded state ``t``: ``"3: 99.2%"`` for class targets, ``"3 50% · 5 49%"`` for hybrids."""
    name = (lambda c: class_names[c]) if class_names is not None else str
    probs = result.probs[t]
    titles = []
    for i in range(len(result.targets)):
        classes = _target_classes(result, i)
        if result.soft:
            titles.append(" · ".join(f"{name(c)} {probs[i, c]:.0%}" for c in classes))
        else:
            titles.append(f"{name(classes[0])}: {probs[i, classes[0]]:.1%}")
    return titles


def _ncols(n: int) -> int:
    """Columns for a grid of ``n`` dreams: one row up to 6, two rows up to 12 (10 digits → 2×5), then rows of 10."""
    return n if n <= 6 else math.ceil(n / 2) if n <= 12 else 10


def _display_range(result: DreamResult) -> tuple[float, float]:
    # Pixels are in [0, 1] with the default clamp; without a clamp show the actual range rather than clipping.
    lo, hi = float(result.frames.min()), float(result.frames.max())
    return (min(lo, 0.0), max(hi, 1.0))


def confidence_figure(result: DreamResult, title: str = "Target confidence during the dream",
                      class_names: Sequence[str] | None = None) -> Figure:
    """Target confidence over optimisation steps, one line per image."""
    name = (lambda c: class_names[c]) if class_names is not None else str
    fig = new_figure(6.5, 3.8)
    ax = fig.add_subplot()
    steps = result.steps.numpy()
    for i in range(len(result.targets)):
        label = "+".join(name(c) for c in _target_classes(result, i))
        ax.plot(steps, result.confidence[:, i].numpy(), label=label, lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("p(target)" if not result.soft else "p(target classes)")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    lam = f" (λ={result.lambda_l2:g})" if result.lambda_l2 else ""
    ax.set_title(title + lam)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, title="target")
    return fig


def _rows_figure(rows: Sequence[tuple[str, DreamResult]], suptitle: str,
                 class_names: Sequence[str] | None = None) -> Figure:
    """One labelled row of final dreams per result, each image titled with its target confidence."""
    n = max(len(res.targets) for _, res in rows)
    fig = new_figure(1.35 * n + 0.6, 1.6 * len(rows) + 0.4)
    axes = fig.subplots(len(rows), n, squeeze=False)
    for row, (label, res) in enumerate(rows):
        titles = dream_titles(res, class_names=class_names)
        lo, hi = _display_range(res)
        for i, ax in enumerate(axes[row]):
            # Ticks off but the axis kept on, so the row label (ylabel) stays visible.
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(res.targets):
                ax.set_frame_on(False)
                continue
            ax.imshow(res.images[i, 0].numpy(), cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(titles[i], fontsize=8)
        axes[row, 0].set_ylabel(label, fontsize=10)
    fig.suptitle(suptitle)
    return fig


def comparison_figure(res_policy: DreamResult, res_reference: DreamResult,
                      labels: tuple[str, str] = ("policy", "reference"),
                      class_names: Sequence[str] | None = None) -> Figure:
    """Two rows (policy, reference) of final dreams, each image titled with its target confidence."""
    return _rows_figure(list(zip(labels, (res_policy, res_reference))),
                        f"Dreams from the same start: {labels[0]} (top) vs {labels[1]} (bottom)", class_names)


def sweep_figure(results: Mapping[float, DreamResult], class_names: Sequence[str] | None = None) -> Figure:
    """One row of final dreams per L2 coefficient of :func:`l2_sweep` (smallest λ on top)."""
    rows = [(f"λ={lam:g}", results[lam]) for lam in sorted(results)]
    return _rows_figure(rows, "Dreams vs L2 penalty (same start)", class_names)


def _frame_indices(t: int, max_frames: int) -> list[int]:
    if t <= max_frames:
        return list(range(t))
    return sorted(set(torch.linspace(0, t - 1, max_frames).round().long().tolist()))


@functools.lru_cache(maxsize=8)
def _font(size: int):
    from matplotlib import font_manager
    from PIL import ImageFont

    # Matplotlib's bundled DejaVu Sans: always present, and it has the λ/✓/✗ glyphs PIL's default font lacks.
    return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)


def render_frame(images: Tensor, titles: Sequence[str], header: str = "", ncols: int = 5, scale: int = 3,
                 vmin: float = 0.0, vmax: float = 1.0):
    """One animation frame as a grayscale ``PIL.Image``: images ``[N,1,H,W]`` upscaled ``scale``× in a grid,
    each with its title above and ``header`` on top.

    Drawn with PIL rather than matplotlib: a matplotlib redraw per frame costs ~0.5 s (layout, ticks, text
    extents) where this costs a few milliseconds, which keeps 60-frame GIFs cheap.
    """
    from PIL import Image, ImageDraw

    arr = ((images.detach().float().cpu()[:, 0] - vmin) / max(vmax - vmin, 1e-12)).clamp(0, 1)
    arr = (arr * 255).round().to(torch.uint8)
    arr = arr.repeat_interleave(scale, 1).repeat_interleave(scale, 2).numpy()  # nearest-neighbour upscale
    n, h, w = arr.shape
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    font, pad, title_h, header_h = _font(11), 8, 16, 20 if header else 4
    cell_w = max(w, max((int(_font(11).getlength(t)) for t in titles), default=0)) + pad
    cell_h = h + title_h + pad
    canvas = Image.new("L", (cell_w * ncols, header_h + cell_h * nrows), color=255)
    draw = ImageDraw.Draw(canvas)
    if header:
        draw.text((canvas.width / 2, 3), header, fill=0, font=_font(12), anchor="mt")
    for i in range(n):  # a handful of tiles per frame: placement only, no optimisation in this loop
        r, c = divmod(i, ncols)
        x0, y0 = c * cell_w + (cell_w - w) // 2, header_h + r * cell_h + title_h
        canvas.paste(Image.fromarray(arr[i], mode="L"), (x0, y0))
        draw.text((c * cell_w + cell_w / 2, y0 - 2), titles[i], fill=0, font=font, anchor="md")
    return canvas


def _write_gif(frames: list, path: Path, fps: int) -> Path:
    """Looping GIF, written to a temporary name then renamed (same atomic-ish rule as PNGs)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        frames[0].save(tmp, format="GIF", save_all=True, append_images=frames[1:], duration=max(1, round(1000 / fps)), loop=0)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_mp4(frames: list, path: Path, fps: int, ffmpeg: str) -> Path:
    """H.264 MP4 through the ffmpeg binary, fed raw RGB frames on stdin."""
    w, h = frames[0].size
    cmd = [ffmpeg, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
           "-r", str(fps), "-i", "-", "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2:color=white",  # yuv420p needs even sizes
           "-pix_fmt", "yuv420p", "-vcodec", "libx264", str(path)]
    data = b"".join(f.convert("RGB").tobytes() for f in frames)
    subprocess.run(cmd, input=data, check=True, capture_output=True)
    return path


def save_dream_outputs(
    result: DreamResult,
    out_dir: str | Path,
    prefix: str = "dream",
    class_names: Sequence[str] | None = None,
    max_frames: int = 60,
    fps: int = 10,
) -> list[Path]:
    """Write a dream's images and return their paths.

    - ``<prefix>_grid.png``: the final images, titled with their target confidence;
    - ``<prefix>_confidence.png``: confidence over steps, one line per image;
    - ``<prefix>.gif``: the optimisation as an animation (at most ``max_frames`` frames, evenly subsampled);
    - ``<prefix>.mp4``: the same animation, only when an ``ffmpeg`` binary is on the PATH.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lam = f"  (λ={result.lambda_l2:g})" if result.lambda_l2 else ""
    lo, hi = _display_range(result)
    ncols = _ncols(len(result.targets))
    grid = image_grid_figure(result.images, dream_titles(result, class_names=class_names), ncols=ncols,
                             suptitle=f"Dreams after {int(result.steps[-1])} steps{lam}", vmin=lo, vmax=hi)
    paths = [save_figure(grid, out / f"{prefix}_grid.png")]
    paths.append(save_figure(confidence_figure(result, class_names=class_names), out / f"{prefix}_confidence.png"))
    frames = [
        render_frame(result.frames[t], dream_titles(result, t, class_names), f"step {int(result.steps[t])}{lam}",
                     ncols=ncols, vmin=lo, vmax=hi)
        for t in _frame_indices(len(result.frames), max_frames)
    ]
    paths.append(_write_gif(frames, out / f"{prefix}.gif", fps))
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        paths.append(_write_mp4(frames, out / f"{prefix}.mp4", fps, ffmpeg))
    return paths
