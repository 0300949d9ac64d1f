"""Fréchet distance between Gaussians fitted to two sets of embeddings (FAD, FID), in float64.

``d^2 = |mu_1 - mu_2|^2 + tr S_1 + tr S_2 - 2 tr (S_1 S_2)^{1/2}``. The trace of the matrix square root is
taken from the symmetric form ``S_1^{1/2} S_2 S_1^{1/2}`` (same eigenvalues as ``S_1 S_2``, but symmetric
positive semi-definite, so ``eigvalsh`` is exact and stable where a general ``sqrtm`` of the non-symmetric
product returns complex round-off): no scipy needed.
"""

from __future__ import annotations

import torch
from torch import Tensor


def gaussian_stats(embeddings: Tensor) -> tuple[Tensor, Tensor]:
    """``[N, D]`` -> (mean ``[D]``, covariance ``[D, D]`` with N - 1 in the denominator), float64."""
    if embeddings.dim() != 2 or embeddings.shape[0] < 2:
        raise ValueError(
            f"embeddings must be [N >= 2, D] to fit a covariance, got shape {tuple(embeddings.shape)}"
        )
    x = embeddings.double()
    return x.mean(0), torch.cov(x.T, correction=1).reshape(x.shape[1], x.shape[1])


def psd_sqrt(matrix: Tensor) -> Tensor:
    """Square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    values, vectors = torch.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(mu1: Tensor, sigma1: Tensor, mu2: Tensor, sigma2: Tensor) -> Tensor:
    """Squared Fréchet distance of N(mu1, sigma1) and N(mu2, sigma2), a float64 scalar >= 0."""
    mu1, sigma1, mu2, sigma2 = (t.double() for t in (mu1, sigma1, mu2, sigma2))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (*mu1.shape, *mu1.shape):
        raise ValueError(
            f"shapes disagree: mu {tuple(mu1.shape)} / {tuple(mu2.shape)}, sigma {tuple(sigma1.shape)} / "
            f"{tuple(sigma2.shape)}; expected [D] means and [D, D] covariances of the same embedding"
        )
    root = psd_sqrt(sigma1)
    middle = root @ sigma2 @ root
    trace_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    distance = (mu1 - mu2).square().sum() + sigma1.trace() + sigma2.trace() - 2 * trace_sqrt
    return distance.clamp(min=0)


__all__ = ["frechet_distance", "gaussian_stats", "psd_sqrt"]
