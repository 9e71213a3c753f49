"""Direct float64 implementations of ReSi part B's measures, written from the papers'
formulas (Klabunde et al. 2023 survey; Kriegeskorte et al. 2008; Szekely et al. 2007; Wang et
al. 2020; Hamilton et al. 2016; Wang & Isola 2020), slow and plain, with no code shared with
actstore. ``DIRECT[name](X, Y, **opts)`` is the value of measure ``name``; the options are the
measure's own (missing ones take the measure's defaults), so a test can run every measure on
any activations (keep n small: the loops are O(n^2) in Python).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["DIRECT", "neighbours"]


# --- RSMs -----------------------------------------------------------------------------------


def _euclid(X):
    n = X.shape[0]
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            D[i, j] = math.sqrt(float(np.sum((X[i] - X[j]) ** 2)))
    return D


def _cos(a, b):
    return float(a @ b / math.sqrt(float(a @ a) * float(b @ b)))


def _pearson_rows(X):
    n = X.shape[0]
    S = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            a, b = X[i] - X[i].mean(), X[j] - X[j].mean()
            S[i, j] = _cos(a, b)
    return S


def _cos_dist(X):
    n = X.shape[0]
    return np.array([[0.0 if i == j else 1.0 - _cos(X[i], X[j]) for j in range(n)] for i in range(n)])


def _lower(S):
    n = S.shape[0]
    return np.array([S[i, j] for i in range(n) for j in range(i)])


def _average_ranks(v):
    order = sorted(range(len(v)), key=lambda i: v[i])
    ranks = np.empty(len(v))
    s = 0
    while s < len(order):
        e = s
        while e + 1 < len(order) and v[order[e + 1]] == v[order[s]]:
            e += 1
        for m in range(s, e + 1):
            ranks[order[m]] = (s + e) / 2 + 1
        s = e + 1
    return ranks


def _pearson(a, b):
    a, b = a - a.mean(), b - b.mean()
    return float(np.sum(a * b) / math.sqrt(float(np.sum(a * a)) * float(np.sum(b * b))))


def rsa(X, Y, inner="correlation", outer="spearman"):
    rsm = _pearson_rows if inner == "correlation" else _euclid
    a, b = _lower(rsm(X)), _lower(rsm(Y))
    if outer == "spearman":
        a, b = _average_ranks(a), _average_ranks(b)
    return _pearson(a, b)


def rsm_norm_difference(X, Y, inner="euclidean", norm="frobenius"):
    rsm = _euclid if inner == "euclidean" else _cos_dist
    M = rsm(X) - rsm(Y)
    if norm == "frobenius":
        return math.sqrt(float(np.sum(M * M)))
    return float(np.linalg.svd(M, compute_uv=False)[0])


def distance_correlation(X, Y):
    def centred(D):
        n = D.shape[0]
        A = np.zeros_like(D)
        for i in range(n):
            for j in range(n):
                A[i, j] = D[i, j] - D[i, :].mean() - D[:, j].mean() + D.mean()
        return A

    A, B = centred(_euclid(X)), centred(_euclid(Y))
    n2 = A.shape[0] ** 2
    dcov2 = lambda P, Q: float(np.sum(P * Q)) / n2
    return math.sqrt(dcov2(A, B) / math.sqrt(dcov2(A, A) * dcov2(B, B)))


# --- neighbourhoods -------------------------------------------------------------------------


def neighbours(X, k):
    """Per row i: the k rows j != i of largest cosine similarity, most similar first, ties by
    the smaller index (list of lists)."""
    n = X.shape[0]
    out = []
    for i in range(n):
        cands = sorted((j for j in range(n) if j != i), key=lambda j: (-_cos(X[i], X[j]), j))
        out.append(cands[:k])
    return out


def _rank_term(a, b):
    shared = set(a) & set(b)
    if not shared:
        return 0.0
    vmax = sum(1.0 / m for m in range(1, len(shared) + 1))
    total = 0.0
    for j in shared:
        ra, rb = a.index(j) + 1, b.index(j) + 1
        total += 2.0 / ((1 + abs(ra - rb)) * (ra + rb))
    return total / vmax


def _jac_term(a, b):
    return len(set(a) & set(b)) / len(set(a) | set(b))


def jaccard_similarity(X, Y, k=10):
    return float(np.mean([_jac_term(a, b) for a, b in zip(neighbours(X, k), neighbours(Y, k))]))


def rank_similarity(X, Y, k=10):
    return float(np.mean([_rank_term(a, b) for a, b in zip(neighbours(X, k), neighbours(Y, k))]))


def joint_rank_jaccard_similarity(X, Y, k=10):
    return float(np.mean([_jac_term(a, b) * _rank_term(a, b) for a, b in zip(neighbours(X, k), neighbours(Y, k))]))


def second_order_cosine_similarity(X, Y, k=10, values="similarity"):
    vals = []
    for i, (a, b) in enumerate(zip(neighbours(X, k), neighbours(Y, k))):
        union = sorted(set(a) | set(b))
        s = np.array([_cos(X[i], X[j]) for j in union])
        t = np.array([_cos(Y[i], Y[j]) for j in union])
        if values == "distance":
            s, t = 1.0 - s, 1.0 - t
        vals.append(_cos(s, t))
    return float(np.mean(vals))


# --- statistics -----------------------------------------------------------------------------


def magnitude_difference(X, Y):
    return abs(float(np.linalg.norm(X.mean(axis=0))) - float(np.linalg.norm(Y.mean(axis=0))))


def concentricity_difference(X, Y):
    def c(Z):
        mu = Z.mean(axis=0)
        return float(np.mean([_cos(z, mu) for z in Z]))

    return abs(c(X) - c(Y))


def uniformity_difference(X, Y, t=2.0, pairs="all"):
    def u(Z):
        n = Z.shape[0]
        terms = [
            math.exp(-t * float(np.sum((Z[i] - Z[j]) ** 2)))
            for i in range(n)
            for j in range(n)
            if pairs == "all" or i != j
        ]
        return math.log(sum(terms) / len(terms))

    return abs(u(X) - u(Y))


DIRECT = {
    "rsa": rsa,
    "rsm_norm_difference": rsm_norm_difference,
    "distance_correlation": distance_correlation,
    "jaccard_similarity": jaccard_similarity,
    "rank_similarity": rank_similarity,
    "joint_rank_jaccard_similarity": joint_rank_jaccard_similarity,
    "second_order_cosine_similarity": second_order_cosine_similarity,
    "magnitude_difference": magnitude_difference,
    "concentricity_difference": concentricity_difference,
    "uniformity_difference": uniformity_difference,
}
