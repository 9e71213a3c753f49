"""Direct, slow implementations of statistics that several test modules compare against."""

from __future__ import annotations

import numpy as np


def direct_debiased_cka(X: np.ndarray, Y: np.ndarray) -> float:
    """Debiased linear CKA by METHODS.md's HSIC1 formula with n x n Gram matrices, float64."""
    n = len(X)

    def hsic(K, L):
        K, L = K.copy(), L.copy()
        np.fill_diagonal(K, 0)
        np.fill_diagonal(L, 0)
        one = np.ones(n)
        return (
            np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ K @ L @ one
        ) / (n * (n - 3))

    K, L = X @ X.T, Y @ Y.T
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))
