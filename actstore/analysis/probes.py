"""Linear probes and probe transfer through linear bridges (METHODS.md, "Probe transfer").

A probe is L2-penalised logistic regression (scikit-learn, lbfgs; multinomial for more than
two classes) on activations standardised with the *training* mean and standard deviation
(a constant column gets scale 1). Accuracy = share of test prompts whose most probable class
is the label; top-k accuracy = share whose label is among the k most probable classes.

Probe transfer of a task (labels y over prompts that both models have):
  split      seeded shuffle: perm = numpy.random.default_rng(seed).permutation(n); the first
             n_test = max(1, round(test_fraction * n)) are the test prompts, the rest train;
  sourceNative  source probe (trained on S[train]) scored on S[test];
  targetNative  target probe (trained on T[train]) scored on T[test];
  transferred   bridge target -> source fitted on the bridge prompts (not the task), applied
                to T[test], scored by the source probe;
  taskSpecific  the same with the bridge fitted on T[train] -> S[train];
  chance        share of the most frequent class in the test split.

Next-token transfer (the first source document, across tokenizers): labels are each model's
own next token at the last prompt token; see :func:`next_token_transfer`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from . import validation as V
from .bridges import LinearBridge, LowRankFamily, check_method
from .errors import AnalysisError
from .results import NextTokenTransfer, ProbeTransfer, ProbeTransferSweep

__all__ = [
    "LinearProbe",
    "NextTokenTransfer",
    "ProbeTransfer",
    "ProbeTransferSweep",
    "next_token_classes",
    "next_token_transfer",
    "normalize_token",
    "probe_transfer",
    "probe_transfer_sweep",
    "split_indices",
]

DEFAULT_C = 1.0
DEFAULT_MAX_ITER = 2000
# Prefixes that tokenizers put on word-initial pieces: SentencePiece "▁", byte-level BPE "Ġ".
TOKEN_PREFIXES = "\u2581\u0120 "


# --------------------------------------------------------------------------- results
# --------------------------------------------------------------------------- probes
class LinearProbe:
    """L2 logistic regression on standardised activations, scikit-learn style.

    ``C`` is scikit-learn's inverse penalty (default 1.0 on standardised features).
    ``fit(X [n, d], y [n] ints)``, ``predict``, ``predict_proba`` (columns = ``classes_``),
    ``score`` (accuracy), ``top_k_accuracy``. Needs at least two classes in the training labels.
    """

    def __init__(self, C: float = DEFAULT_C, max_iter: int = DEFAULT_MAX_ITER):
        self.C = V.check_positive(C, "C")
        self.max_iter = int(max_iter)

    def fit(self, X: np.ndarray, y: np.ndarray) -> LinearProbe:
        import warnings

        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        x = V.activations(X, "X", min_rows=2)
        lab = _labels(y, len(x))
        classes = np.unique(lab)
        if len(classes) < 2:
            raise AnalysisError(f"a probe needs at least 2 classes in its training labels, got only {classes.tolist()}")
        x = np.asarray(x, dtype=np.float64)
        self.mean_ = x.mean(0)
        sd = x.std(0)
        self.scale_ = np.where(sd > 0, sd, 1.0)
        self.model_ = LogisticRegression(C=self.C, max_iter=self.max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            warnings.filterwarnings("ignore", message="The number of unique classes")
            self.model_.fit((x - self.mean_) / self.scale_, lab)
        self.classes_ = self.model_.classes_
        return self

    def _z(self, X: np.ndarray) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise AnalysisError("this probe is not fitted yet; call fit(X, y) first")
        x = V.activations(X, "X")
        if x.shape[1] != len(self.mean_):
            raise AnalysisError(f"X has {x.shape[1]} columns but the probe was trained on {len(self.mean_)}")
        z: np.ndarray = (np.asarray(x, dtype=np.float64) - self.mean_) / self.scale_
        return z

    def decision(self, X: np.ndarray) -> np.ndarray:
        """Class scores [n, n_classes] (larger = more probable), columns = ``classes_``."""
        d: np.ndarray = self.model_.decision_function(self._z(X))
        return np.stack([-d, d], 1) if d.ndim == 1 else d

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        proba: np.ndarray = self.model_.predict_proba(self._z(X))
        return proba

    def predict(self, X: np.ndarray) -> np.ndarray:
        labels: np.ndarray = self.classes_[np.argmax(self.decision(X), 1)]
        return labels

    def score(self, X: np.ndarray, y: np.ndarray) -> float:
        """Accuracy on (X, y)."""
        return self.top_k_accuracy(X, y, 1)

    def top_k_accuracy(self, X: np.ndarray, y: np.ndarray, k: int) -> float:
        """Share of rows whose label is among the k highest-scoring classes (ties: by class order)."""
        scores = self.decision(X)
        lab = _labels(y, len(scores))
        k = min(int(k), scores.shape[1])
        top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        hit = (self.classes_[top] == lab[:, None]).any(1)
        return float(hit.mean())


def _labels(y: object, n: int) -> np.ndarray:
    lab = np.asarray(y)
    if lab.ndim != 1 or len(lab) != n:
        raise AnalysisError(f"labels must be 1-D with one label per row ({n}), got shape {lab.shape}")
    if lab.dtype.kind == "f":
        if not np.isfinite(lab).all() or (lab != np.round(lab)).any():
            raise AnalysisError("labels must be integers (no NaN, no fractions)")
        lab = lab.astype(np.int64)
    elif lab.dtype.kind not in "iu":
        raise AnalysisError(f"labels must be integers, got dtype {lab.dtype}")
    return lab.astype(np.int64)


# --------------------------------------------------------------------------- splits
def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices, each ascending: a seeded shuffle (numpy default_rng(seed)),
    the first max(1, round(test_fraction * n)) shuffled rows are the test split.

    Raises AnalysisError when test_fraction is outside (0, 1) or fewer than 2 rows remain to train.
    """
    if (
        isinstance(test_fraction, bool)
        or not isinstance(test_fraction, (int, float, np.floating))
        or not 0.0 < float(test_fraction) < 1.0
    ):
        raise AnalysisError(f"testFraction must be strictly between 0 and 1, got {test_fraction!r}")
    seed = V.check_int(seed, "seed", minimum=0)
    n = V.check_int(n, "n", minimum=0)
    n_test = max(1, int(round(float(test_fraction) * n)))
    if n - n_test < 2:
        raise AnalysisError(
            f"too few prompts: n = {n} with testFraction {test_fraction} leaves "
            f"{n - n_test} to train on; at least 2 are needed"
        )
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def _chance(y_test: np.ndarray) -> float:
    _, counts = np.unique(y_test, return_counts=True)
    return float(counts.max() / len(y_test))


def _check_task(
    S: object, T: object, y: object, Sb: object, Tb: object, bridge_min: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    s = V.activations(S, "S (source task activations)", min_rows=3)
    t = V.activations(T, "T (target task activations)", min_rows=3)
    V.check_same_rows([s, t], ["S", "T"])
    lab = _labels(y, len(s))
    if len(np.unique(lab)) < 2:
        raise AnalysisError(f"the task needs at least 2 classes, got only {np.unique(lab).tolist()}")
    sb = V.activations(Sb, "S_bridge (source bridge activations)", min_rows=bridge_min)
    tb = V.activations(Tb, "T_bridge (target bridge activations)", min_rows=bridge_min)
    V.check_same_rows([sb, tb], ["S_bridge", "T_bridge"])
    if sb.shape[1] != s.shape[1] or tb.shape[1] != t.shape[1]:
        raise AnalysisError(
            f"bridge and task widths differ: source {sb.shape[1]} vs {s.shape[1]}, target {tb.shape[1]} vs {t.shape[1]}"
        )
    return s, t, lab, sb, tb


def _fit_probe(X: np.ndarray, y: np.ndarray, C: float, which: str) -> LinearProbe:
    if len(np.unique(y)) < 2:
        raise AnalysisError(
            f"the training split of the {which} probe has only one class "
            f"({np.unique(y).tolist()}); use more prompts or another seed"
        )
    return LinearProbe(C).fit(X, y)


# --------------------------------------------------------------------------- transfer
def probe_transfer(
    S: np.ndarray,
    T: np.ndarray,
    y: Sequence[int] | np.ndarray,
    S_bridge: np.ndarray,
    T_bridge: np.ndarray,
    *,
    method: str = "ridge",
    rank: int | None = None,
    alpha: float | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    C: float = DEFAULT_C,
    device: str = "auto",
    precision: str = "auto",
) -> ProbeTransfer:
    """Probe transfer from target to source (module docstring; METHODS.md).

    Args:
        S [n, p], T [n, q]: source / target activations of the task prompts (same order).
        y [n]: integer labels.
        S_bridge [m, p], T_bridge [m, q]: the frozen bridge's prompts (general text, not the
            task's test prompts; the caller chooses them).
        method, rank, alpha: the bridge (see :class:`LinearBridge`), fitted target -> source.
        test_fraction, seed: the split. C: the probes' inverse L2 penalty.
        device, precision: of the bridges' linear algebra (see :mod:`.bridges`).
    """
    method = check_method(method)
    s, t, lab, sb, tb = _check_task(S, T, y, S_bridge, T_bridge, 3 if alpha is None else 2)
    train, test = split_indices(len(s), test_fraction, seed)
    probe_s = _fit_probe(s[train], lab[train], C, "source")
    probe_t = _fit_probe(t[train], lab[train], C, "target")
    frozen = LinearBridge(method, alpha=alpha, rank=rank, device=device, precision=precision).fit(tb, sb)
    task = LinearBridge(method, alpha=alpha, rank=rank, device=device, precision=precision).fit(t[train], s[train])
    yt = lab[test]
    return ProbeTransfer(
        source_native=probe_s.score(s[test], yt),
        target_native=probe_t.score(t[test], yt),
        transferred=probe_s.score(frozen.predict(t[test]), yt),
        task_specific=probe_s.score(task.predict(t[test]), yt),
        chance=_chance(yt),
        n_train=len(train),
        n_test=len(test),
        n_bridge=len(sb),
        n_classes=len(np.unique(lab[train])),
        method=method,
        rank=frozen.rank_,
        alpha_frozen=frozen.alpha_,
        alpha_task=task.alpha_,
    )


def probe_transfer_sweep(
    S: np.ndarray,
    T: np.ndarray,
    y: Sequence[int] | np.ndarray,
    S_bridge: np.ndarray,
    T_bridge: np.ndarray,
    ranks: Sequence[int],
    *,
    alpha: float | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    C: float = DEFAULT_C,
    device: str = "auto",
    precision: str = "auto",
) -> ProbeTransferSweep:
    """Probe transfer through reduced-rank ridge bridges at every rank in ``ranks``.

    Shared work is done once: the split, both probes, one ridge fit per bridge (frozen and
    task-specific, alpha given or by GCV) and one SVD of each fit's fitted values; each rank
    then costs one projection and one probe evaluation. Each value equals
    ``probe_transfer(..., method="low_rank", rank=r)`` (the tests check it).
    """
    if alpha is not None:
        alpha = V.check_positive(alpha, "alpha")
    s, t, lab, sb, tb = _check_task(S, T, y, S_bridge, T_bridge, 3 if alpha is None else 2)
    rk = V.check_ranks(ranks, t.shape[1], s.shape[1])
    train, test = split_indices(len(s), test_fraction, seed)
    probe_s = _fit_probe(s[train], lab[train], C, "source")
    probe_t = _fit_probe(t[train], lab[train], C, "target")
    yt = lab[test]
    fams = [
        LowRankFamily(tb, sb, alpha, None, device, precision),
        LowRankFamily(t[train], s[train], alpha, None, device, precision),
    ]
    curves: list[list[float]] = [[], []]
    full: list[float] = []
    for fam, curve in zip(fams, curves):
        Tc = fam.centred_source(t[test])
        A = (Tc @ fam.W) @ fam.Vh.T
        for r in rk:
            curve.append(probe_s.score(fam.predict_rank(A, r), yt))
        full.append(probe_s.score(fam.predict_full(Tc), yt))
    return ProbeTransferSweep(
        ranks=tuple(rk),
        transferred=tuple(curves[0]),
        task_specific=tuple(curves[1]),
        source_native=probe_s.score(s[test], yt),
        target_native=probe_t.score(t[test], yt),
        chance=_chance(yt),
        ridge_transferred=full[0],
        ridge_task_specific=full[1],
        alpha_frozen=fams[0].alpha,
        alpha_task=fams[1].alpha,
        n_train=len(train),
        n_test=len(test),
        n_bridge=len(sb),
        n_classes=len(np.unique(lab[train])),
    )


# --------------------------------------------------------------------------- next tokens
def normalize_token(token: str) -> str:
    """A decoded token string without its tokenizer's word-start marker: leading SentencePiece
    "▁", byte-level "Ġ" and spaces are stripped ("Ġthe", "▁the", " the" -> "the"). A token made
    only of such characters is kept as it is (so " " stays " ")."""
    stripped = token.lstrip(TOKEN_PREFIXES)
    return stripped if stripped else token


def _usable(token: str) -> bool:
    # Byte-fallback pieces (part of a UTF-8 character) decode to U+FFFD; they are not words.
    return bool(token) and "\ufffd" not in token


def next_token_classes(source_tokens: Sequence[str], target_tokens: Sequence[str], classes: int) -> list[str]:
    """The ``classes`` most frequent normalised next-token strings that occur as a next token of
    both models (counting both models' occurrences; ties by string order)."""
    src = Counter(normalize_token(x) for x in source_tokens)
    tgt = Counter(normalize_token(x) for x in target_tokens)
    shared = [w for w in src if w in tgt and _usable(w)]
    shared.sort(key=lambda w: (-(src[w] + tgt[w]), w))
    return shared[:classes]


def next_token_transfer(
    S: np.ndarray,
    T: np.ndarray,
    source_top: Sequence[Sequence[str]],
    target_top: Sequence[Sequence[str]],
    S_bridge: np.ndarray,
    T_bridge: np.ndarray,
    *,
    classes: int = 500,
    method: str = "ridge",
    rank: int | None = None,
    alpha: float | None = None,
    test_fraction: float = 0.3,
    seed: int = 0,
    C: float = DEFAULT_C,
    device: str = "auto",
    precision: str = "auto",
) -> NextTokenTransfer:
    """Next-token probe transfer across tokenizers (the first source document, Experiment A).

    Inputs: S [n, p], T [n, q] activations at the last prompt token; ``source_top[i]`` /
    ``target_top[i]`` each model's own most probable next tokens for prompt i as decoded
    strings, most probable first (at least one; 5 for the top-5 ceiling). Vocabularies are
    aligned on normalised strings (:func:`normalize_token`); the classes are the ``classes``
    most frequent strings that both models predict (:func:`next_token_classes`), and only
    prompts whose source *and* target next tokens are classes are kept. Then, with the split
    of :func:`split_indices`:

    * source native: probe on S[train] -> source labels, scored on S[test] (top-1 / top-5);
    * target native: probe on T[train] -> target labels, scored on T[test];
    * transferred: bridge target -> source fitted on (T_bridge, S_bridge), applied to T[test],
      the *source* probe's predictions scored against the *target*'s labels (what the target
      model is about to say, read through the source probe);
    * task specific: the same with the bridge fitted on (T[train], S[train]);
    * agreement (the cross-model ceiling of transferred): top-1 = share of test prompts where
      both models' next tokens are the same string; top-5 = share where the target's next
      token is among the source model's top 5;
    * chance: share of the most frequent target label in the test split.
    """
    method = check_method(method)
    classes = V.check_int(classes, "classes", minimum=2)
    s = V.activations(S, "S", min_rows=3)
    t = V.activations(T, "T", min_rows=3)
    V.check_same_rows([s, t], ["S", "T"])
    if len(source_top) != len(s) or len(target_top) != len(s):
        raise AnalysisError(
            f"next tokens must have one entry per prompt ({len(s)}), got "
            f"{len(source_top)} (source) and {len(target_top)} (target)"
        )
    if any(len(x) == 0 for x in source_top) or any(len(x) == 0 for x in target_top):
        raise AnalysisError("every prompt needs at least one next token per model")
    sb = V.activations(S_bridge, "S_bridge", min_rows=2)
    tb = V.activations(T_bridge, "T_bridge", min_rows=2)
    V.check_same_rows([sb, tb], ["S_bridge", "T_bridge"])
    src1 = [normalize_token(x[0]) for x in source_top]
    tgt1 = [normalize_token(x[0]) for x in target_top]
    vocab = next_token_classes([x[0] for x in source_top], [x[0] for x in target_top], classes)
    shared_tokens = len(next_token_classes([x[0] for x in source_top], [x[0] for x in target_top], 1 << 62))
    if len(vocab) < 2:
        raise AnalysisError(
            f"the two models share {len(vocab)} next-token string(s) over these "
            f"{len(s)} prompts; at least 2 are needed for a probe"
        )
    index = {w: i for i, w in enumerate(vocab)}
    keep = np.array([a in index and b in index for a, b in zip(src1, tgt1)])
    rows = np.flatnonzero(keep)
    if len(rows) < 3:
        raise AnalysisError(
            f"only {len(rows)} prompts have next tokens among the {len(vocab)} shared classes; at least 3 are needed"
        )
    ys = np.array([index[src1[i]] for i in rows])
    yt_all = np.array([index[tgt1[i]] for i in rows])
    s, t = s[rows], t[rows]
    train, test = split_indices(len(rows), test_fraction, seed)
    probe_s = _fit_probe(s[train], ys[train], C, "source")
    probe_t = _fit_probe(t[train], yt_all[train], C, "target")
    frozen = LinearBridge(method, alpha=alpha, rank=rank, device=device, precision=precision).fit(tb, sb)
    task = LinearBridge(method, alpha=alpha, rank=rank, device=device, precision=precision).fit(t[train], s[train])
    yt = yt_all[test]
    ys_te = ys[test]
    bridged = frozen.predict(t[test])
    bridged_task = task.predict(t[test])
    top5_src = [{normalize_token(x) for x in source_top[rows[i]][:5]} for i in test]
    agree5 = float(np.mean([vocab[yt[j]] in top5_src[j] for j in range(len(test))]))
    return NextTokenTransfer(
        source_native_top1=probe_s.top_k_accuracy(s[test], ys_te, 1),
        source_native_top5=probe_s.top_k_accuracy(s[test], ys_te, 5),
        target_native_top1=probe_t.top_k_accuracy(t[test], yt, 1),
        target_native_top5=probe_t.top_k_accuracy(t[test], yt, 5),
        transferred_top1=probe_s.top_k_accuracy(bridged, yt, 1),
        transferred_top5=probe_s.top_k_accuracy(bridged, yt, 5),
        task_specific_top1=probe_s.top_k_accuracy(bridged_task, yt, 1),
        task_specific_top5=probe_s.top_k_accuracy(bridged_task, yt, 5),
        agreement_top1=float(np.mean(ys_te == yt)),
        agreement_top5=agree5,
        chance=_chance(yt),
        classes=tuple(vocab),
        shared_tokens=shared_tokens,
        n_train=len(train),
        n_test=len(test),
        n_bridge=len(sb),
        method=method,
        rank=frozen.rank_,
    )
