"""Pure figure builders: tensors in, ``matplotlib.figure.Figure`` out.

Figures are made with ``Figure`` + an Agg canvas rather than ``pyplot``: nothing is registered globally
(no figure leaks when a caller forgets to close) and no display or backend switch is ever needed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib
import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "new_figure",
    "image_grid_figure",
    "pairs_grid_figure",
    "confusion_matrix_figure",
    "calibration_bins",
    "calibration_figure",
    "filters_figure",
]


def new_figure(width: float, height: float) -> Figure:
    """A constrained-layout figure with its own Agg canvas (renderable headless, never tracked by pyplot)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _as_images(images: Tensor) -> np.ndarray:
    """``[N,1,H,W]`` or ``[N,H,W]`` tensor (any dtype/device) → float32 ``[N,H,W]`` array."""
    images = images.detach().float().cpu()
    if images.dim() == 4:
        if images.shape[1] != 1:
            raise ValueError(f"expected single-channel images [N,1,H,W], got {tuple(images.shape)}")
        images = images[:, 0]
    if images.dim() != 3:
        raise ValueError(f"expected images [N,1,H,W] or [N,H,W], got {tuple(images.shape)}")
    return images.numpy()


def image_grid_figure(
    images: Tensor,
    titles: Sequence[str] | None = None,
    ncols: int = 8,
    suptitle: str | None = None,
    cmap: str = "gray",
    vmin: float = 0.0,
    vmax: float = 1.0,
    cell: float = 1.4,
) -> Figure:
    """A grid of grayscale images (``[N,1,28,28]`` in ``[vmin, vmax]``), one optional title per image.

    The images are tiles of one image on one axes, with white gaps that hold the titles: 32 separate axes took
    ~1.1 s to lay out and draw (the mined-pairs grid at the end of every classifier fit), one mosaic ~0.2 s.
    """
    arr = _as_images(images)
    n, h, w = arr.shape
    if titles is not None and len(titles) != n:
        raise ValueError(f"got {len(titles)} titles for {n} images")
    ncols = max(1, min(ncols, n))
    nrows = max(1, math.ceil(n / ncols))
    # Room above each row for its (possibly two-line) titles, and columns wide enough for the longest title
    # (~0.075 in per character at fontsize 9), so neighbouring titles never overlap.
    title_lines = max((t.count("\n") + 1 for t in titles), default=0) if titles else 0
    longest = max((len(line) for t in titles or [] for line in t.split("\n")), default=0)
    width = max(cell, 0.075 * longest + 0.15)
    pixels_per_inch = h / (cell * 0.85)
    gap_x = max(1, round(width * pixels_per_inch) - w)
    gap_y = max(1, round(0.15 * cell * pixels_per_inch + 0.18 * title_lines * pixels_per_inch))
    mosaic = np.full((nrows * (h + gap_y), ncols * (w + gap_x) - gap_x), np.nan, dtype=np.float32)
    for k in range(n):
        r, c = divmod(k, ncols)
        top, left = r * (h + gap_y) + gap_y, c * (w + gap_x)
        mosaic[top : top + h, left : left + w] = arr[k]
    fig = new_figure(width * ncols, (cell + 0.18 * title_lines) * nrows + (0.4 if suptitle else 0.0))
    ax = fig.subplots()
    ax.imshow(
        mosaic,
        cmap=matplotlib.colormaps[cmap].with_extremes(bad="white"),
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        aspect="equal",
    )
    ax.set_axis_off()
    for k, title in enumerate(titles or []):
        r, c = divmod(k, ncols)
        top, left = r * (h + gap_y) + gap_y, c * (w + gap_x)
        ax.text(left + (w - 1) / 2, top - 1, title, ha="center", va="bottom", fontsize=9, in_layout=False)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def pairs_grid_figure(
    images: Tensor, chosen: Tensor, rejected: Tensor, max_items: int = 32, ncols: int = 8, title: str | None = None
) -> Figure:
    """Preference pairs: each image titled ``"✓<chosen> ✗<rejected>"`` (first ``max_items`` only)."""
    n = min(len(images), max_items)
    titles = [f"✓{int(c)} ✗{int(r)}" for c, r in zip(chosen[:n].tolist(), rejected[:n].tolist())]
    return image_grid_figure(images[:n], titles, ncols=ncols, suptitle=title)


def confusion_matrix_figure(
    matrix: Tensor, title: str = "Confusion matrix", class_names: Sequence[str] | None = None
) -> Figure:
    """Counts ``matrix[true, pred]``: colour is row-normalised (per-class recall), cells show raw counts."""
    m = matrix.detach().cpu().to(torch.float64)
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"expected a square [C,C] matrix, got {tuple(m.shape)}")
    c = m.shape[0]
    # Row-normalised colour so rare classes are as readable as common ones; empty rows stay 0.
    norm = (m / m.sum(dim=1, keepdim=True).clamp_min(1)).numpy()
    names = list(class_names) if class_names is not None else [str(i) for i in range(c)]
    side = max(3.5, 0.55 * c + 1.5)
    fig = new_figure(side + 0.8, side)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, shrink=0.8, label="row fraction")
    ax.set_xticks(range(c), names)
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fontsize = 8 if c <= 12 else 6
    counts = m.numpy()
    # The counts lie inside the axes, so they cannot change the layout's margins: in_layout=False spares the
    # constrained layout measuring c*c texts (same image, ~10% less time per figure).
    for i in range(c):
        for j in range(c):
            text = f"{counts[i, j]:.0f}" if float(counts[i, j]).is_integer() else f"{counts[i, j]:.2g}"
            ax.text(
                j,
                i,
                text,
                ha="center",
                va="center",
                fontsize=fontsize,
                color="white" if norm[i, j] > 0.5 else "black",
                in_layout=False,
            )
    return fig


def calibration_bins(confidences: Tensor, correct: Tensor, n_bins: int = 15) -> tuple[Tensor, Tensor, Tensor, float]:
    """Equal-width confidence bins on [0, 1]: per-bin (count, mean confidence, accuracy) and the ECE.

    ECE = sum_b (n_b / N) * |acc_b - conf_b|; empty bins have count 0 and contribute nothing.
    """
    conf = confidences.detach().float().cpu().flatten()
    corr = correct.detach().float().cpu().flatten()
    if conf.shape != corr.shape:
        raise ValueError(f"confidences {tuple(conf.shape)} and correct {tuple(corr.shape)} differ in size")
    # Bin b holds (b/n, (b+1)/n]; a confidence of exactly 0 goes to the first bin.
    idx = (conf * n_bins).ceil().long().sub(1).clamp(0, n_bins - 1)
    count = torch.zeros(n_bins).index_add_(0, idx, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins).index_add_(0, idx, conf)
    acc_sum = torch.zeros(n_bins).index_add_(0, idx, corr)
    safe = count.clamp_min(1)
    mean_conf, acc = conf_sum / safe, acc_sum / safe
    ece = float((count / max(len(conf), 1) * (acc - mean_conf).abs()).sum())
    return count, mean_conf, acc, ece


def calibration_figure(
    confidences: Tensor, correct: Tensor, n_bins: int = 15, title: str = "Reliability diagram"
) -> Figure:
    """Reliability diagram (accuracy per confidence bin vs the diagonal) with the ECE in the title,
    and the confidence histogram underneath so sparse bins are not over-read."""
    count, mean_conf, acc, ece = calibration_bins(confidences, correct, n_bins)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / n_bins
    filled = (count > 0).numpy()
    fig = new_figure(4.5, 5.2)
    ax, hist = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    ax.bar(centers[filled], acc.numpy()[filled], width=width, edgecolor="black", color="tab:blue", label="accuracy")
    gap = (mean_conf - acc).numpy()
    ax.bar(
        centers[filled],
        gap[filled],
        bottom=acc.numpy()[filled],
        width=width,
        color="tab:red",
        alpha=0.3,
        edgecolor="tab:red",
        hatch="//",
        label="gap to confidence",
    )
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.set_title(f"{title} (ECE {ece:.3f}, N={int(count.sum())})")
    ax.legend(loc="upper left", fontsize=8)
    hist.bar(centers, count.numpy(), width=width, color="gray", edgecolor="black")
    hist.set_xlabel("confidence")
    hist.set_ylabel("count")
    return fig


def filters_figure(weight: Tensor, title: str = "First-layer filters", max_filters: int = 64) -> Figure:
    """Each conv filter ``weight[o, i]`` as an image, diverging colormap on one symmetric scale (as in the 1-vs-8 filter notebook).

    The shared symmetric scale makes filters comparable: white is zero, red/blue are the sign, and the
    colour intensity means the same weight magnitude in every panel. Small kernels also show their values.
    The filters are tiles of one image (one axes, white gaps): 64 separate axes took ~2.6 s to lay out and draw,
    the mosaic ~0.3 s (it is drawn at the end of every classifier fit).
    """
    w = weight.detach().float().cpu()
    if w.dim() != 4:
        raise ValueError(f"expected a conv weight [out, in, kh, kw], got {tuple(w.shape)}")
    out_ch, in_ch = w.shape[:2]
    flat = w.reshape(out_ch * in_ch, *w.shape[2:])[:max_filters].numpy()
    labels = [f"filter {o}" if in_ch == 1 else f"f{o}·in{i}" for o in range(out_ch) for i in range(in_ch)][:max_filters]
    n, kh, kw = flat.shape
    vmax = float(np.abs(flat).max()) or 1.0
    ncols = min(n, 8)
    nrows = math.ceil(n / ncols)
    gap_x, gap_y = max(1, kw // 3), max(1, kh // 2)  # room between tiles; the row gap holds the labels
    mosaic = np.full((nrows * (kh + gap_y), ncols * (kw + gap_x) - gap_x), np.nan)
    for k in range(n):
        r, c = divmod(k, ncols)
        top, left = r * (kh + gap_y) + gap_y, c * (kw + gap_x)
        mosaic[top : top + kh, left : left + kw] = flat[k]
    fig = new_figure(1.5 * ncols + 0.8, 1.6 * nrows + 0.5)
    ax = fig.subplots()
    cmap = matplotlib.colormaps["RdBu_r"].with_extremes(bad="white")
    im = ax.imshow(mosaic, cmap=cmap, vmin=-vmax, vmax=vmax, interpolation="nearest")
    ax.set_axis_off()
    annotate = n <= 16 and kh * kw <= 25
    for k in range(n):
        r, c = divmod(k, ncols)
        top, left = r * (kh + gap_y) + gap_y, c * (kw + gap_x)
        ax.text(left + (kw - 1) / 2, top - 0.6, labels[k], ha="center", va="bottom", fontsize=9)
        if annotate:
            for (i, j), v in np.ndenumerate(flat[k]):
                color = "white" if abs(v) > 0.6 * vmax else "black"
                ax.text(left + j, top + i, f"{v:.2f}", ha="center", va="center", fontsize=6, color=color)
    fig.colorbar(im, ax=ax, fraction=0.03, label="weight")
    fig.suptitle(f"{title} ({out_ch}×{in_ch}×{w.shape[2]}×{w.shape[3]})")
    return fig
