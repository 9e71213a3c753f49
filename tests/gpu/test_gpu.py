"""GPU paths against their CPU twins (``-m gpu``; skipped without a CUDA device). Run by
``bench/gpu_check.sh`` on a CUDA machine.

- approximate k-NN with the coarse k-means on CUDA keeps the recall promise on near ties;
- FAISS-GPU exact search (when the faiss build has GPUs) answers what CPU FAISS answers;
- CKA and CKA matrices on CUDA equal the float64 CPU values (1e-6 in float64);
- the atlas' graph overlaps (dense product on CUDA) equal affinity_matrix bit for bit;
- SAE feature correlation on CUDA picks the CPU pairs with the same correlations;
- ingest on CUDA in float32 stores the CPU ingest's vectors (1e-4 relative: TF32 and kernel
  order), and the default bf16 compute stays close (cosine > 0.99 per row).
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def test_ann_with_cuda_kmeans_keeps_the_recall_promise():
    from actstore.store.knn.ann import AnnIndex, synthetic_near_ties
    from actstore.store.knn.tuning import exact_neighbours, recall_at_k, tune

    X = synthetic_near_ties(20_200, 64, seed=5)
    Q = X[20_000:].astype(np.float32)
    entry = AnnIndex.build("g:1", "cosine", np.arange(20_000, dtype=np.int64), X[:20_000], device="cuda")
    entry = tune(entry, 0.98, 1000.0)
    assert entry.tuning is not None and not entry.tuning.exact and entry.tuning.recall >= 0.98
    _, true_scores = exact_neighbours(entry, Q / np.linalg.norm(Q, axis=1, keepdims=True), 10)
    _, scores = entry.search(Q, 10)
    assert recall_at_k(scores, true_scores, "cosine") >= 0.98


def test_faiss_gpu_exact_search_matches_cpu(tmp_path):
    import faiss

    from actstore import Store
    from actstore.config import Settings

    if getattr(faiss, "get_num_gpus", lambda: 0)() == 0:
        pytest.skip("this faiss build has no GPUs (install faiss-gpu-cu12)")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3000, 64), dtype=np.float32)
    store = Store.open(tmp_path / "db", settings=Settings(environ={}))
    ids = store.add_prompts("d", [f"p{i}" for i in range(3000)])
    store.write_activations("m", 0, ids, X, n_layers=1, dtype="float32")
    Q = rng.standard_normal((20, 64), dtype=np.float32)
    got, scores = store.knn.search("m", 0, Q, 10, approximate=False)
    x = X / np.linalg.norm(X, axis=1, keepdims=True)
    q = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    sims = q.astype(np.float64) @ x.T.astype(np.float64)
    np.testing.assert_array_equal(got, np.asarray(ids)[np.argsort(-sims, axis=1)[:, :10]])
    np.testing.assert_allclose(scores, np.sort(sims, axis=1)[:, ::-1][:, :10], atol=1e-5)


def test_cka_on_cuda_matches_cpu_float64():
    from actstore.analysis import cka_matrix, linear_cka

    rng = np.random.default_rng(1)
    Z = rng.standard_normal((600, 8))
    A = [Z @ rng.standard_normal((8, 48)) + 0.5 * rng.standard_normal((600, 48)) for _ in range(3)]
    B = [Z @ rng.standard_normal((8, 40)) + 0.5 * rng.standard_normal((600, 40)) for _ in range(2)]
    for debiased in (True, False):
        cpu = linear_cka(A[0], B[0], debiased=debiased, device="cpu", precision="float64")
        gpu = linear_cka(A[0], B[0], debiased=debiased, device="cuda", precision="float64")
        assert abs(cpu - gpu) < 1e-6
    M_cpu = cka_matrix(A, B, device="cpu", precision="float64")
    M_gpu = cka_matrix(A, B, device="cuda", precision="float64")
    np.testing.assert_allclose(M_gpu, M_cpu, atol=1e-6)


def test_atlas_graph_overlaps_on_cuda_equal_affinity_matrix():
    from actstore.analysis.atlas import graph_overlaps
    from actstore.analysis.knn import affinity_matrix, knn_graph

    rng = np.random.default_rng(3)
    z = rng.standard_normal((1500, 8))
    graphs = [
        knn_graph(z @ rng.standard_normal((8, 32)) + 0.5 * rng.standard_normal((1500, 32)), 10, device="cuda")
        for _ in range(12)
    ]
    ref = affinity_matrix(graphs, graphs)
    for budget in (1 << 30, 1 << 22):  # one block; many blocks
        got = graph_overlaps(graphs, device="cuda", memory_budget_bytes=budget)
        assert np.array_equal(got, ref)
    assert np.array_equal(graph_overlaps(graphs[:5], graphs[5:], device="cuda"), ref[:5, 5:])


def test_sae_correlation_on_cuda_matches_cpu():
    from actstore.analysis.sae_match import match_features

    rng = np.random.default_rng(2)
    A = np.maximum(rng.standard_normal((800, 64)), 0).astype(np.float32)
    B = np.maximum(A[:, rng.permutation(64)] + 0.3 * rng.standard_normal((800, 64)), 0).astype(np.float32)
    cpu = match_features(A, B, device="cpu")
    gpu = match_features(A, B, device="cuda")
    np.testing.assert_array_equal(gpu.pairs_a, cpu.pairs_a)
    np.testing.assert_array_equal(gpu.pairs_b, cpu.pairs_b)
    np.testing.assert_allclose(gpu.correlation, cpu.correlation, atol=1e-5)
    # the correlations are Pearson r of the paired columns (float64, directly)
    r = [
        np.corrcoef(A[:, i].astype(np.float64), B[:, j].astype(np.float64))[0, 1]
        for i, j in zip(gpu.pairs_a[:10], gpu.pairs_b[:10])
    ]
    np.testing.assert_allclose(gpu.correlation[:10], r, atol=1e-5)


def test_ingest_on_cuda_matches_cpu(tmp_path):
    from actstore import Store
    from actstore.ingest.pipeline import ingest
    from tests.tiny_models import tiny_model_dir

    path = tiny_model_dir("llama", n_layers=2, hidden=32)
    prompts = tmp_path / "prompts.txt"
    prompts.write_text(
        "\n".join(
            f"the {w} sat on the mat number {i}" for i, w in enumerate(["cat", "dog", "bird", "fish", "cow", "fox"] * 3)
        )
        + "\n"
    )
    out = {}
    for name, device, compute in (("cpu", "cpu", "float32"), ("cuda32", "cuda", "float32"), ("cuda", "cuda", None)):
        db = tmp_path / name
        ingest(
            db, path, "words", prompts_file=prompts, key="tiny", device=device, compute_dtype=compute, dtype="float32"
        )
        store = Store.open(db)
        out[name] = [store.activations.read("tiny", layer)[1] for layer in (0, 1)]
    for a, b in zip(out["cpu"], out["cuda32"]):
        np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)
    for a, b in zip(out["cpu"], out["cuda"]):
        cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        assert cos.min() > 0.99
