"""Direct float64 implementations of the platonic-representation measures, written from their
definitions (Huh et al. 2024 and its code's documented behaviour), slow and plain: dense n x n
matrices and Python loops. ``DIRECT[name](X, Y, **options) -> float`` for every measure of
actstore.analysis.measures.knn and .kernels, so other tests (e.g. on real-model activations)
can check each registered measure against its formula.

Neighbours: the k prompts j != i with the largest cosine similarity to i, most similar first,
ties by the smaller index (``tie="larger"`` breaks them the other way, to show where the tie
rule changes a value).
"""

from __future__ import annotations

import numpy as np


def cosine(X: np.ndarray) -> np.ndarray:
    x = np.asarray(X, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    return x @ x.T


def neighbours(X: np.ndarray, k: int, tie: str = "smaller") -> list[list[int]]:
    S = cosine(X)
    n = S.shape[0]
    out = []
    for i in range(n):
        others = [j for j in range(n) if j != i]
        sign = 1 if tie == "smaller" else -1
        others.sort(key=lambda j: (-S[i, j], sign * j))
        out.append(others[:k])
    return out


def mutual_knn(X, Y, k, tie="smaller"):
    a, b = neighbours(X, k, tie), neighbours(Y, k, tie)
    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(a, b)]))


def cycle_knn(X, Y, k):
    a, b = neighbours(X, k), neighbours(Y, k)
    return float(np.mean([any(i in a[j] for j in b[i]) for i in range(len(a))]))


def _lcs(p, q):
    dp = np.zeros((len(p) + 1, len(q) + 1), dtype=int)
    for i in range(1, len(p) + 1):
        for j in range(1, len(q) + 1):
            dp[i, j] = dp[i - 1, j - 1] + 1 if p[i - 1] == q[j - 1] else max(dp[i - 1, j], dp[i, j - 1])
    return int(dp[-1, -1])


def _levenshtein(p, q):
    dp = np.zeros((len(p) + 1, len(q) + 1), dtype=int)
    dp[:, 0] = np.arange(len(p) + 1)
    dp[0, :] = np.arange(len(q) + 1)
    for i in range(1, len(p) + 1):
        for j in range(1, len(q) + 1):
            dp[i, j] = min(dp[i - 1, j] + 1, dp[i, j - 1] + 1, dp[i - 1, j - 1] + (p[i - 1] != q[j - 1]))
    return int(dp[-1, -1])


def lcs_knn(X, Y, k):
    a, b = neighbours(X, k), neighbours(Y, k)
    return float(np.mean([_lcs(p, q) for p, q in zip(a, b)]))


def edit_distance_knn(X, Y, k):
    a, b = neighbours(X, k), neighbours(Y, k)
    return 1.0 - float(np.mean([_levenshtein(p, q) for p, q in zip(a, b)])) / k


def hsic_unbiased(A, B):
    """Song et al. 2012 eq. 5 on general (possibly non-symmetric) n x n matrices."""
    n = A.shape[0]
    At, Bt = A.copy(), B.copy()
    np.fill_diagonal(At, 0.0)
    np.fill_diagonal(Bt, 0.0)
    one = np.ones(n)
    return (np.trace(At @ Bt) + At.sum() * Bt.sum() / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * one @ At @ Bt @ one) / (
        n * (n - 3)
    )


def hsic_biased(A, B):
    n = A.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(A @ H @ B @ H))


def _mask(K, k, unbiased):
    n = K.shape[0]
    M = np.zeros((n, n))
    for i in range(n):
        cand = [j for j in range(n) if j != i]
        cand.sort(key=lambda j: (-K[i, j], j))
        chosen = cand[:k] if unbiased else [i] + cand[: k - 1]
        M[i, chosen] = 1.0
    return M


def cknna(X, Y, k, unbiased=True, eps=0.0):
    K, L = cosine(X), cosine(Y)
    MK, ML = _mask(K, k, unbiased), _mask(L, k, unbiased)
    h = hsic_unbiased if unbiased else hsic_biased
    kl = h(MK * ML * K, MK * ML * L)
    return float(kl / (np.sqrt(h(MK * K, MK * K) * h(ML * L, ML * L)) + eps))


def cka(X, Y, eps=0.0):
    x = np.asarray(X, dtype=np.float64)
    y = np.asarray(Y, dtype=np.float64)
    K, L = x @ x.T, y @ y.T
    return float(hsic_biased(K, L) / (np.sqrt(hsic_biased(K, K) * hsic_biased(L, L)) + eps))


def unbiased_cka(X, Y, eps=0.0):
    x = np.asarray(X, dtype=np.float64)
    y = np.asarray(Y, dtype=np.float64)
    K, L = x @ x.T, y @ y.T
    return float(hsic_unbiased(K, L) / (np.sqrt(hsic_unbiased(K, K) * hsic_unbiased(L, L)) + eps))


def platonic_rows(X, q=0.95, exact=False):
    """platonic-rep's preprocessing from its description: clip |entries| at one global value
    (exact: the entry of rank int(q N) of all sorted |entries|; else the mean over rows of each
    row's linear-interpolated q-quantile of |x_i|), then unit-length rows."""
    x = np.asarray(X, dtype=np.float64)
    a = np.abs(x)
    if q < 1:
        if exact:
            c = sorted(a.ravel().tolist())[int(q * a.size)]
        else:
            qs = []
            for row in a:
                s = sorted(row.tolist())
                pos = q * (len(s) - 1)
                lo = int(np.floor(pos))
                hi = min(lo + 1, len(s) - 1)
                qs.append(s[lo] + (pos - lo) * (s[hi] - s[lo]))
            c = float(np.mean(qs))
        x = np.clip(x, -c, c)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


DIRECT = {
    "mutual_knn": mutual_knn,
    "cycle_knn": cycle_knn,
    "lcs_knn": lcs_knn,
    "edit_distance_knn": edit_distance_knn,
    "cknna": cknna,
    "cka": cka,
    "unbiased_cka": unbiased_cka,
}
