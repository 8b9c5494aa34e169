"""Distances between two sets of feature vectors: FID (Fréchet distance) and KID (kernel distance).

Both compare the classifier features (:meth:`tf3dgan.metrics.classifier.VoxelClassifier.features`)
of real and generated shapes; lower is closer, 0 for identical distributions.

* :func:`frechet_distance` (FID, Heusel et al. 2017): fit a Gaussian to each set and take
  ``||mu1 - mu2||² + Tr(S1 + S2 - 2 (S1 S2)^½)``.  Biased for small sets (it grows as the
  sets shrink), so compare FIDs only at equal set sizes.
* :func:`kernel_distance` (KID, Bińkowski et al. 2018): the unbiased estimate of the squared
  maximum mean discrepancy with the cubic polynomial kernel ``k(x, y) = (x·y / d + 1)³``,
  averaged over random subsets.  Unbiased, so it can be slightly negative when the two sets
  come from one distribution, and comparable across set sizes.
"""
from __future__ import annotations

import numpy as np

__all__ = ["frechet_distance", "gaussian_frechet_distance", "kernel_distance", "mmd2_unbiased",
           "polynomial_kernel"]

_EPS = 1e-6   # added to both covariances' diagonals when their product's square root is singular


def _as_features(f, name: str) -> np.ndarray:
    f = np.asarray(f)
    if f.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (N, F) of feature vectors, got shape {f.shape}")
    if f.dtype.kind not in "biuf":
        raise ValueError(f"{name} must hold numbers, got dtype {f.dtype}")
    f = f.astype(np.float64)
    if not np.isfinite(f).all():
        raise ValueError(f"{name} holds NaN or infinite values")
    return f


def _pair(f1, f2, least: int) -> tuple[np.ndarray, np.ndarray]:
    f1, f2 = _as_features(f1, "f1"), _as_features(f2, "f2")
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"f1 and f2 must have the same feature size, got {f1.shape[1]} and {f2.shape[1]}")
    for name, f in (("f1", f1), ("f2", f2)):
        if len(f) < least:
            raise ValueError(f"{name} needs at least {least} feature vectors, got {len(f)}")
    return f1, f2


def frechet_distance(f1, f2) -> float:
    """FID between feature sets ``f1`` ``(N1, F)`` and ``f2`` ``(N2, F)`` (N1, N2 >= 2).

    The Fréchet distance between the Gaussians fitted to each set (sample means, covariances
    with ``N - 1``); see :func:`gaussian_frechet_distance`."""
    f1, f2 = _pair(f1, f2, 2)
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    return gaussian_frechet_distance(mu1, np.atleast_2d(s1), mu2, np.atleast_2d(s2))


def gaussian_frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = _EPS) -> float:
    """``||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½)``: the squared Fréchet (2-Wasserstein)
    distance between N(mu1, sigma1) and N(mu2, sigma2).

    As in the reference FID code (pytorch-fid, TTUR): the matrix square root is
    ``scipy.linalg.sqrtm``; when it is not finite (a singular product, e.g. fewer vectors than
    features) ``eps`` is added to both diagonals and it is taken again; a tiny imaginary part
    from rounding is dropped (a large one is an error).  Never below 0."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shapes do not match: mu {mu1.shape}, {mu2.shape}; sigma {sigma1.shape}, {sigma2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"the square root of sigma1·sigma2 has an imaginary part up to "
                             f"{np.max(np.abs(covmean.imag)):.3g}: the covariances are not valid")
        covmean = covmean.real
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean)
    return float(max(value, 0.0))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    import warnings

    from scipy import linalg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # "matrix is singular": handled by the caller's retry
        out = linalg.sqrtm(a)
    return out[0] if isinstance(out, tuple) else out


def polynomial_kernel(x, y, degree: int = 3, gamma: float | None = None, coef0: float = 1.0) -> np.ndarray:
    """``(gamma · x·y + coef0) ** degree`` for all pairs of rows; ``gamma`` defaults to 1 / features."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if gamma is None:
        gamma = 1.0 / x.shape[1]
    return (gamma * (x @ y.T) + coef0) ** degree


def mmd2_unbiased(x, y) -> float:
    """The unbiased estimate of MMD² between samples ``x`` (m, d) and ``y`` (n, d) with the cubic
    polynomial kernel: mean of k(x_i, x_j) over i ≠ j, plus the same for y, minus twice the mean
    of k(x_i, y_j) over all pairs."""
    m, n = len(x), len(y)
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2.0 * kxy.mean())


def kernel_distance(f1, f2, subsets: int = 100, subset_size: int | None = None,
                    seed: int = 0) -> tuple[float, float]:
    """KID between feature sets ``f1`` and ``f2``: ``(mean, std)`` of :func:`mmd2_unbiased` over
    ``subsets`` random subsets of ``subset_size`` vectors drawn without replacement from each
    set (default ``min(1000, len(f1), len(f2))``; at least 2).  ``std`` is the spread over the
    subsets (ddof 0), not the standard error of the mean.  ``seed`` makes the draw repeatable;
    with ``subset_size`` equal to both set sizes every subset is the whole set."""
    f1, f2 = _pair(f1, f2, 2)
    if isinstance(subsets, bool) or int(subsets) != subsets or subsets < 1:
        raise ValueError(f"subsets must be a whole number >= 1, got {subsets!r}")
    n = min(1000, len(f1), len(f2)) if subset_size is None else subset_size
    if isinstance(n, bool) or int(n) != n or not 2 <= n <= min(len(f1), len(f2)):
        raise ValueError(f"subset_size must be a whole number from 2 to {min(len(f1), len(f2))} "
                         f"(the smaller set), got {subset_size!r}")
    n = int(n)
    rng = np.random.default_rng(seed)
    values = np.empty(int(subsets))
    for i in range(int(subsets)):
        x = f1[rng.choice(len(f1), n, replace=False)]
        y = f2[rng.choice(len(f2), n, replace=False)]
        values[i] = mmd2_unbiased(x, y)
    return float(values.mean()), float(values.std())
