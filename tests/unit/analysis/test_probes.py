"""Probes and probe transfer (actstore.analysis.probes): each statistic against a direct
implementation (sklearn pipeline + numpy ridge/procrustes), linked vs unrelated models, the
rank sweep, next-token transfer across tokenizers, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from actstore.analysis import AnalysisError
from actstore.analysis.probes import (
    LinearProbe,
    next_token_classes,
    next_token_transfer,
    normalize_token,
    probe_transfer,
    probe_transfer_sweep,
    split_indices,
)
from tests.unit.analysis.test_bridges import direct_low_rank, direct_ridge


def direct_probe(X, y):
    mu, sd = X.mean(0), X.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    m = LogisticRegression(C=1.0, max_iter=2000).fit((X - mu) / sd, y)
    return lambda Z: m.predict((Z - mu) / sd)


def direct_split(n, frac, seed):
    perm = np.random.default_rng(seed).permutation(n)
    k = max(1, round(frac * n))
    return np.sort(perm[k:]), np.sort(perm[:k])


def task(rng, n=400, m=300, p=20, q=30, k=2, linked=True):
    Z = rng.standard_normal((n + m, 6))
    y = np.argmax(Z[:n, :k] + 0.3 * rng.standard_normal((n, k)), 1) if k > 2 else (Z[:n, 0] > 0).astype(int)
    S = Z @ rng.standard_normal((6, p)) + 0.3 * rng.standard_normal((n + m, p))
    T = (Z if linked else rng.standard_normal((n + m, 6))) @ rng.standard_normal((6, q)) + 0.3 * rng.standard_normal(
        (n + m, q)
    )
    return S[:n], T[:n], y, S[n:], T[n:]


def test_split_is_a_seeded_shuffle():
    tr, te = split_indices(10, 0.3, 4)
    etr, ete = direct_split(10, 0.3, 4)
    np.testing.assert_array_equal(tr, etr)
    np.testing.assert_array_equal(te, ete)
    assert len(te) == 3 and len(np.intersect1d(tr, te)) == 0


@pytest.mark.parametrize("k", [2, 4])
def test_probe_transfer_matches_direct_computation(rng, k):
    S, T, y, Sb, Tb = task(rng, k=k)
    r = probe_transfer(S, T, y, Sb, Tb, alpha=5.0, test_fraction=0.3, seed=1)
    tr, te = direct_split(len(S), 0.3, 1)
    ps, pt = direct_probe(S[tr], y[tr]), direct_probe(T[tr], y[tr])
    W_frozen = direct_ridge(Tb, Sb, 5.0)
    W_task = direct_ridge(T[tr], S[tr], 5.0)
    frozen = (T[te] - Tb.mean(0)) @ W_frozen + Sb.mean(0)
    taskb = (T[te] - T[tr].mean(0)) @ W_task + S[tr].mean(0)
    assert r.source_native == pytest.approx(np.mean(ps(S[te]) == y[te]), abs=1e-12)
    assert r.target_native == pytest.approx(np.mean(pt(T[te]) == y[te]), abs=1e-12)
    assert r.transferred == pytest.approx(np.mean(ps(frozen) == y[te]), abs=1e-12)
    assert r.task_specific == pytest.approx(np.mean(ps(taskb) == y[te]), abs=1e-12)
    assert r.chance == pytest.approx(np.bincount(y[te]).max() / len(te), abs=1e-12)
    assert (r.n_train, r.n_test, r.n_bridge, r.n_classes) == (len(tr), len(te), len(Sb), k)


def test_linked_models_transfer_and_unrelated_ones_do_not(rng):
    S, T, y, Sb, Tb = task(rng, linked=True)
    r = probe_transfer(S, T, y, Sb, Tb)
    assert r.target_native > 0.85 and r.source_native > 0.85
    assert abs(r.transferred - r.target_native) < 0.05
    S, U, y, Sb, Ub = task(np.random.default_rng(5), linked=False)
    r = probe_transfer(S, U, y, Sb, Ub)
    assert r.source_native > 0.85
    assert abs(r.transferred - r.chance) < 0.1
    assert abs(r.target_native - r.chance) < 0.1


def test_sweep_equals_separate_low_rank_transfers(rng):
    S, T, y, Sb, Tb = task(rng)
    ranks = [1, 2, 6, 20]
    sw = probe_transfer_sweep(S, T, y, Sb, Tb, ranks, alpha=2.0, seed=3)
    for i, rk in enumerate(ranks):
        one = probe_transfer(S, T, y, Sb, Tb, method="low_rank", rank=rk, alpha=2.0, seed=3)
        assert sw.transferred[i] == one.transferred
        assert sw.task_specific[i] == one.task_specific
    full = probe_transfer(S, T, y, Sb, Tb, alpha=2.0, seed=3)
    assert (sw.ridge_transferred, sw.ridge_task_specific) == (full.transferred, full.task_specific)
    assert (sw.source_native, sw.target_native, sw.chance) == (full.source_native, full.target_native, full.chance)
    # direct low-rank check at rank 2
    tr, te = direct_split(len(S), 0.3, 3)
    ps = direct_probe(S[tr], y[tr])
    bridged = (T[te] - Tb.mean(0)) @ direct_low_rank(Tb, Sb, 2.0, 2) + Sb.mean(0)
    assert sw.transferred[1] == pytest.approx(np.mean(ps(bridged) == y[te]), abs=1e-12)
    assert sw.transferred[-1] > sw.transferred[0]  # the planted link has rank 6


def test_probe_top_k_and_errors(rng):
    X = rng.standard_normal((90, 5))
    y = np.repeat([0, 1, 2], 30)
    X[:, 0] += y
    p = LinearProbe().fit(X, y)
    assert p.top_k_accuracy(X, y, 3) == 1.0
    assert p.score(X, y) == pytest.approx(np.mean(p.predict(X) == y))
    with pytest.raises(AnalysisError, match="at least 2 classes"):
        LinearProbe().fit(X, np.zeros(90, int))
    with pytest.raises(AnalysisError, match="labels must be integers"):
        LinearProbe().fit(X, np.full(90, np.nan))
    S, T, y, Sb, Tb = task(rng, n=40, m=20)
    with pytest.raises(AnalysisError, match="testFraction must be strictly between 0 and 1"):
        probe_transfer(S, T, y, Sb, Tb, test_fraction=1.0)
    with pytest.raises(AnalysisError, match="testFraction must be strictly between 0 and 1"):
        probe_transfer(S, T, y, Sb, Tb, test_fraction=0)
    with pytest.raises(AnalysisError, match="the task needs at least 2 classes"):
        probe_transfer(S, T, np.ones(40, int), Sb, Tb)
    with pytest.raises(AnalysisError, match="too few prompts"):
        probe_transfer(S[:3], T[:3], y[:3], Sb, Tb, test_fraction=0.5)
    with pytest.raises(AnalysisError, match=r"rank must be <= 20"):
        probe_transfer_sweep(S, T, y, Sb, Tb, [4, 50])
    with pytest.raises(AnalysisError, match="bridge and task widths differ"):
        probe_transfer(S, T, y, Sb[:, :5], Tb)


# ----------------------------------------------------------------- next tokens
def test_normalize_token_strips_tokenizer_prefixes():
    assert normalize_token("\u2581the") == "the"
    assert normalize_token("\u0120the") == "the"
    assert normalize_token(" the") == "the"
    assert normalize_token("the") == "the"
    assert normalize_token(" ") == " "
    assert normalize_token("\n") == "\n"


def test_next_token_classes_are_the_most_frequent_shared():
    src = ["\u2581a", "\u2581a", "\u2581b", "c", "x"]
    tgt = ["\u0120a", "b", "c", "c", "y"]
    assert next_token_classes(src, tgt, 2) == ["a", "c"]
    assert next_token_classes(src, tgt, 10) == ["a", "c", "b"]


def test_next_token_transfer_against_direct(rng):
    words = ["the", "of", "and", "to", "in", "a"]
    n, m = 360, 200
    Z = rng.standard_normal((n + m, 6))
    lab_s = np.argmax(Z[:n], 1)
    lab_t = np.where(rng.random(n) < 0.8, lab_s, rng.integers(0, 6, n))  # models mostly agree
    src_top = [["\u2581" + words[i]] + ["\u2581" + words[(i + j) % 6] for j in range(1, 5)] for i in lab_s]
    tgt_top = [["\u0120" + words[i], "x", "y", "z", "w"] for i in lab_t]
    S = Z @ rng.standard_normal((6, 12)) + 0.1 * rng.standard_normal((n + m, 12))
    T = Z @ rng.standard_normal((6, 16)) + 0.1 * rng.standard_normal((n + m, 16))
    r = next_token_transfer(S[:n], T[:n], src_top, tgt_top, S[n:], T[n:], classes=500, alpha=1.0, seed=2)
    assert set(r.classes) == set(words)
    tr, te = direct_split(n, 0.3, 2)
    idx = {w: i for i, w in enumerate(r.classes)}
    ys = np.array([idx[words[i]] for i in lab_s])
    yt = np.array([idx[words[i]] for i in lab_t])
    assert r.agreement_top1 == pytest.approx(np.mean(ys[te] == yt[te]), abs=1e-12)
    assert r.agreement_top5 == pytest.approx(
        np.mean([words[lab_t[i]] in {w.lstrip("\u2581") for w in src_top[i]} for i in te]), abs=1e-12
    )
    ps = direct_probe(S[:n][tr], ys[tr])
    bridged = (T[:n][te] - T[n:].mean(0)) @ direct_ridge(T[n:], S[n:], 1.0) + S[n:].mean(0)
    assert r.transferred_top1 == pytest.approx(np.mean(ps(bridged) == yt[te]), abs=1e-12)
    assert r.source_native_top1 == pytest.approx(np.mean(ps(S[:n][te]) == ys[te]), abs=1e-12)
    assert r.chance == pytest.approx(np.bincount(yt[te]).max() / len(te), abs=1e-12)
    assert r.source_native_top1 > 0.8 and r.source_native_top5 == 1.0
    assert r.transferred_top1 <= r.agreement_top1 + 0.1
    with pytest.raises(AnalysisError, match="share 0 next-token string"):
        next_token_transfer(S[:n], T[:n], src_top, [["zz"]] * n, S[n:], T[n:])
