"""Sample-quality metrics computed in a judge's feature space: a small FID, within-class diversity, win rate."""

from __future__ import annotations

import torch
from torch import Tensor


def _sqrtm_psd(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigendecomposition; negative round-off clipped)."""
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(a: Tensor, b: Tensor) -> float:
    r"""Fréchet distance between Gaussians fitted to feature sets ``a [N, D]`` and ``b [M, D]`` (Heusel et al., 2017,
    arXiv:1706.08500 — FID when the features are Inception's; here they are the evaluation judge's):

    .. math:: \|\mu_a - \mu_b\|^2 + \mathrm{tr}\big(\Sigma_a + \Sigma_b - 2(\Sigma_a^{1/2}\Sigma_b\Sigma_a^{1/2})^{1/2}\big)

    The symmetric form of the cross term keeps every square root of a PSD matrix (no complex round-off). float64.
    """
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"the Fréchet distance needs at least two samples per set, got {len(a)} and {len(b)}")
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T).reshape(a.shape[1], -1), torch.cov(b.T).reshape(b.shape[1], -1)
    root_a = _sqrtm_psd(cov_a)
    cross = _sqrtm_psd(root_a @ cov_b @ root_a)
    return float((mu_a - mu_b).square().sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * torch.trace(cross))


def within_class_diversity(features: Tensor, labels: Tensor) -> float:
    """Mean pairwise Euclidean distance between samples of the same class, averaged over classes (classes with fewer
    than two samples are skipped). A policy that collapses onto one image per class scores 0."""
    per_class = []
    for c in labels.unique():
        f = features[labels == c].double()
        n = len(f)
        if n < 2:
            continue
        per_class.append(torch.cdist(f, f).sum() / (n * (n - 1)))  # the diagonal is zero
    if not per_class:
        raise ValueError("within-class diversity needs at least two samples of some class")
    return float(torch.stack(per_class).mean())


def win_rate(policy_scores: Tensor, reference_scores: Tensor) -> float:
    """Fraction of paired samples (same class, same starting noise) where the policy's score beats the reference's;
    a tie counts as half a win, so two identical models score exactly 0.5."""
    if policy_scores.shape != reference_scores.shape or policy_scores.numel() == 0:
        raise ValueError(
            f"win rate needs paired, non-empty scores, got shapes {tuple(policy_scores.shape)} and {tuple(reference_scores.shape)}"
        )
    wins = (policy_scores > reference_scores).double() + 0.5 * (policy_scores == reference_scores).double()
    return float(wins.mean())


__all__ = ["frechet_distance", "within_class_diversity", "win_rate"]
