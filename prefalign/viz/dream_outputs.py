"""Pictures of a network dream (:mod:`prefalign.viz.dreams`): titles, the grid, the confidence curves, the
policy-vs-reference and λ-sweep figures, and the animation frames written as GIF (and MP4 when ffmpeg is present)."""

from __future__ import annotations

import functools
import math
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from prefalign.viz.dreams import DreamResult
from prefalign.viz.figures import image_grid_figure, new_figure
from prefalign.viz.images import save_figure

__all__ = [
    "comparison_figure",
    "sweep_figure",
    "confidence_figure",
    "dream_titles",
    "render_frame",
    "save_dream_outputs",
]


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


def confidence_figure(
    result: DreamResult, title: str = "Target confidence during the dream", class_names: Sequence[str] | None = None
) -> Figure:
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


def _rows_figure(
    rows: Sequence[tuple[str, DreamResult]], suptitle: str, class_names: Sequence[str] | None = None
) -> Figure:
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


def comparison_figure(
    res_policy: DreamResult,
    res_reference: DreamResult,
    labels: tuple[str, str] = ("policy", "reference"),
    class_names: Sequence[str] | None = None,
) -> Figure:
    """Two rows (policy, reference) of final dreams, each image titled with its target confidence."""
    return _rows_figure(
        list(zip(labels, (res_policy, res_reference))),
        f"Dreams from the same start: {labels[0]} (top) vs {labels[1]} (bottom)",
        class_names,
    )


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


def render_frame(
    images: Tensor,
    titles: Sequence[str],
    header: str = "",
    ncols: int = 5,
    scale: int = 3,
    vmin: float = 0.0,
    vmax: float = 1.0,
):
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
        frames[0].save(
            tmp, format="GIF", save_all=True, append_images=frames[1:], duration=max(1, round(1000 / fps)), loop=0
        )
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _write_mp4(frames: list, path: Path, fps: int, ffmpeg: str) -> Path:
    """H.264 MP4 through the ffmpeg binary, fed raw RGB frames on stdin."""
    w, h = frames[0].size
    cmd = [
        ffmpeg,
        "-y",
        "-loglevel",
        "error",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        f"{w}x{h}",
        "-r",
        str(fps),
        "-i",
        "-",
        "-vf",
        "pad=ceil(iw/2)*2:ceil(ih/2)*2:color=white",  # yuv420p needs even sizes
        "-pix_fmt",
        "yuv420p",
        "-vcodec",
        "libx264",
        str(path),
    ]
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
    grid = image_grid_figure(
        result.images,
        dream_titles(result, class_names=class_names),
        ncols=ncols,
        suptitle=f"Dreams after {int(result.steps[-1])} steps{lam}",
        vmin=lo,
        vmax=hi,
    )
    paths = [save_figure(grid, out / f"{prefix}_grid.png")]
    paths.append(save_figure(confidence_figure(result, class_names=class_names), out / f"{prefix}_confidence.png"))
    frames = [
        render_frame(
            result.frames[t],
            dream_titles(result, t, class_names),
            f"step {int(result.steps[t])}{lam}",
            ncols=ncols,
            vmin=lo,
            vmax=hi,
        )
        for t in _frame_indices(len(result.frames), max_frames)
    ]
    paths.append(_write_gif(frames, out / f"{prefix}.gif", fps))
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        paths.append(_write_mp4(frames, out / f"{prefix}.mp4", fps, ffmpeg))
    return paths
