"""Typed requests: checks in one place, errors with structure, and cache keys derived from every
field plus every setting that can change an answer."""

from __future__ import annotations

import dataclasses
import enum
import typing

import pytest

from actstore.config import Settings
from actstore.errors import InvalidInput, LimitExceeded
from actstore.layers import LayerRef
from actstore.service import requests as R

# Every setting, classified by hand. A new setting fails test_every_setting_is_classified until
# someone decides whether it can change an answer (and which requests it changes).
ANSWER_SETTINGS = {
    # k-NN graphs and searches switch to approximate indices at ann_threshold prompts, tuned to
    # reach ann_recall within ann_latency_ms: the neighbours found can differ
    "ann_threshold": {"nearestNeighbors", "mutualKnn", "affinityMatrix", "atlas"},
    "ann_recall": {"nearestNeighbors", "mutualKnn", "affinityMatrix", "atlas"},
    "ann_latency_ms": {"nearestNeighbors", "mutualKnn", "affinityMatrix", "atlas"},
}
NOT_ANSWER_SETTINGS = {
    # where and who: the store, access, the network
    "store_uri",
    "token",
    "sae_root",
    "storage_options",
    "index_cache",
    "allowed_hosts",
    "cors_origins",
    "hub_offline",
    "hf_endpoint",
    # limits refuse a request; they never change an answer that is given
    "max_k",
    "max_permutations",
    "max_atlas_models",
    "request_timeout_s",
    "max_query_depth",
    "max_cost",
    "cheap_cost",
    "max_layers",
    "heavy_slots",
    "heavy_queue",
    "max_body_bytes",
    "max_document_chars",
    "max_tokens",
    "max_fields",
    "max_list",
    "max_slots_per_request",
    # checksums refuse damaged rows; an answer that is given is the same with or without them
    "verify_reads",
    # memory budgets of caches
    "cache_mb",
    "graph_cache_mb",
    "sae_cache_mb",
    "parse_cache_mb",
    "results_max_rows",
    "results_compact_every",
    "version_check_s",
    # where a CKA matrix runs: the Ray engine equals the local one to 1e-9 (tests/scale/test_ray.py)
    "engine",
    "ray_address",
    "ray_min_mb",
}


def test_every_setting_is_classified():
    names = {f.name for f in dataclasses.fields(Settings)}
    assert names - set(ANSWER_SETTINGS) - NOT_ANSWER_SETTINGS == set(), "classify the new setting(s) above"
    assert set(ANSWER_SETTINGS) & NOT_ANSWER_SETTINGS == set()


def _sample(cls: type[R.Request]) -> R.Request:
    """A valid request of every type, built from its required fields."""
    required = {
        LayerRef: LayerRef("m", layer=1),
        str: "x",
        tuple: (1, 2),
    }
    if cls is R.AtlasRequest:
        return cls(("a", "b"))
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.default is dataclasses.MISSING:
            kwargs[f.name] = required[typing.get_origin(hints[f.name]) or hints[f.name]]
    if cls is R.NeighborsRequest:
        kwargs["prompt_id"] = 3
    if cls in (R.SimilarityRequest, R.SimilarityMatrixRequest):
        kwargs["measure"] = "cka"
    return cls(**kwargs)


def _other(req: R.Request, f: dataclasses.Field) -> object:
    """Another valid value of one field of ``req``."""
    value = getattr(req, f.name)
    check: R.Check = f.metadata["check"]
    if check.kind is LayerRef:
        return LayerRef("m", depth=0.5)
    if isinstance(check.kind, type) and issubclass(check.kind, enum.Enum):
        return next(m for m in check.kind if m is not value)
    if check.kind is bool:
        return not value if value is not None else True
    if check.kind is int:
        return 7 if value != 7 else 8
    if check.kind is float:
        return 0.25 if value != 0.25 else 0.5
    if check.kind is str:
        return "other"
    if check.kind is tuple:
        return (1.0, 2.0) if check.item is float else (("a", "c") if check.item is str else (3,))
    raise AssertionError(f"no other value for {f.name}")


REQUESTS = R.request_types()


def test_the_request_types():
    assert {c.op for c in REQUESTS} == {
        "nearestNeighbors",
        "mutualKnn",
        "affinityMatrix",
        "cka",
        "ckaMatrix",
        "bridge",
        "bridgeSweep",
        "probeTransfer",
        "probeTransferSweep",
        "nextTokenTransfer",
        "saeFeatureCorrelation",
        "saeMatrix",
        "similarity",
        "similarityMatrix",
        "atlas",
    }


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_every_field_changes_the_key(cls):
    req = _sample(cls)
    base = req.key_payload(Settings(environ={}))
    for f in dataclasses.fields(cls):
        try:
            changed = dataclasses.replace(req, **{f.name: _other(req, f)})
        except InvalidInput:
            continue  # a combination the request refuses (e.g. rank without LOW_RANK)
        assert changed.key_payload(Settings(environ={})) != base, f"{cls.__name__}.{f.name} is not in the key"


@pytest.mark.parametrize("cls", REQUESTS, ids=lambda c: c.__name__)
def test_every_setting_that_changes_an_answer_is_in_the_key(cls):
    req = _sample(cls)
    defaults = Settings(environ={})
    for name, ops in ANSWER_SETTINGS.items():
        value = getattr(defaults, name)
        other = defaults.replace(**{name: value * 2 if not isinstance(value, bool) else not value})
        differs = req.key_payload(other) != req.key_payload(defaults)
        assert differs == (cls.op in ops), f"{name} {'missing from' if cls.op in ops else 'needless in'} {cls.op}'s key"


def test_resolved_layers_replace_the_references_in_the_key():
    s = Settings(environ={})
    by_depth = R.CkaRequest(LayerRef("a", depth=0.5), LayerRef("b", layer=-1))
    by_layer = R.CkaRequest(LayerRef("a", layer=6), LayerRef("b", layer=11))
    resolved = {"a": ["a", 6], "b": ["b", 11]}
    assert by_depth.key_payload(s, resolved) == by_layer.key_payload(s, resolved)
    assert by_depth.key_payload(s) != by_layer.key_payload(s)
    with pytest.raises(TypeError, match=r"CkaRequest has no field\(s\) \['layer'\] to resolve"):
        by_depth.key_payload(s, {"layer": 3})


def test_checks_coerce_and_refuse_with_structure():
    r = R.CkaMatrixRequest("a", "b", preprocess="standardize", precision="FLOAT64", layers_a=[0, 2])
    assert r.preprocess is R.Preprocess.STANDARDIZE and r.precision is R.Precision.FLOAT64
    assert r.layers_a == (0, 2)
    with pytest.raises(InvalidInput) as exc:
        R.CkaRequest(LayerRef("a", 0), LayerRef("b", 0), by_dataset="yes")
    e = exc.value
    assert (str(e), e.field, e.value, e.allowed) == (
        "by_dataset must be true or false, got 'yes'",
        "by_dataset",
        "yes",
        "true or false",
    )
    assert e.worded(lambda n: "--" + n.replace("_", "-")) == "--by-dataset must be true or false, got 'yes'"
    with pytest.raises(InvalidInput, match=r"^k must be an integer >= 1, got 0$"):
        R.MutualKnnRequest(LayerRef("a", 0), LayerRef("b", 0), k=0)
    with pytest.raises(
        InvalidInput, match=r"^preprocess must be one of NONE, STANDARDIZE, DROP_OUTLIER_DIMS, PLATONIC, got 'pca'$"
    ):
        R.CkaRequest(LayerRef("a", 0), LayerRef("b", 0), preprocess="pca")
    with pytest.raises(InvalidInput, match=r"^give either grid or layers_a/layers_b, not both$"):
        R.CkaMatrixRequest("a", "b", grid=3, layers_a=[0])
    with pytest.raises(InvalidInput, match=r"^give exactly one of prompt_id, vector or text \(got prompt_id, text\)$"):
        R.NeighborsRequest(LayerRef("a", 0), prompt_id=1, text="hi")
    with pytest.raises(InvalidInput, match=r"^vector contains NaN or inf$"):
        R.NeighborsRequest(LayerRef("a", 0), vector=[1.0, float("nan")])


def test_limits_come_from_the_settings():
    s = Settings(environ={}, max_permutations=10, max_layers=3)
    R.CkaRequest(LayerRef("a", 0), LayerRef("b", 0), permutations=10).check_limits(s)
    with pytest.raises(InvalidInput) as exc:
        R.CkaRequest(LayerRef("a", 0), LayerRef("b", 0), permutations=11).check_limits(s)
    assert str(exc.value) == "permutations must be at most 10 on this server (ACTSTORE_MAX_PERMUTATIONS), got 11"
    with pytest.raises(
        LimitExceeded,
        match=r"^layers_a has 4 entries; this server allows at most 3 "
        r"\(ACTSTORE_MAX_LAYERS\)$",
    ):
        R.CkaMatrixRequest("a", "b", layers_a=[0, 1, 2, 3]).check_limits(s)
    with pytest.raises(LimitExceeded, match=r"^grid = 4 layers; this server allows at most 3 \(ACTSTORE_MAX_LAYERS\)$"):
        R.AffinityRequest("a", "b", grid=4).check_limits(s)


def test_measure_requests_check_against_the_registry_and_key_their_options():
    s = Settings(environ={})
    a, b = LayerRef("a", 0), LayerRef("b", 0)
    base = R.SimilarityRequest(a, b, "cknna", k=5)
    # options are canonical JSON: the same options in any order (or as text) are the same request
    one = R.SimilarityRequest(a, b, "cknna", k=5, options={"unbiased": False, "eps": 1e-6})
    two = R.SimilarityRequest(a, b, "cknna", k=5, options='{"eps": 1e-06, "unbiased": false}')
    assert one == two and one.options == '{"eps":1e-06,"unbiased":false}'
    assert one.key_payload(s) == two.key_payload(s) != base.key_payload(s)
    assert R.SimilarityRequest(a, b, "cknna", k=5, options={}) == base  # no options: the same request
    assert R.SimilarityRequest(a, b, "mutual_knn", k=5).key_payload(s) != R.SimilarityRequest(
        a, b, "cycle_knn", k=5
    ).key_payload(s)
    assert one.measure_options() == {"k": 5, "unbiased": False, "eps": 1e-6}
    # None stands for the default of the arguments the contract declares nullable with a default
    r = R.SimilarityMatrixRequest("a", "b", "cka", preprocess=None, by_dataset=None)
    assert (r.preprocess, r.by_dataset) == (R.Preprocess.NONE, False)
    with pytest.raises(InvalidInput) as exc:
        R.SimilarityRequest(a, b, "Mutual_KNN", k=3)
    assert (exc.value.field, exc.value.value) == ("measure", "Mutual_KNN")
    assert exc.value.allowed.startswith("one of mutual_knn, cycle_knn, lcs_knn, edit_distance_knn, cknna, cka, ")
    with pytest.raises(InvalidInput, match=r"^k must be an integer >= 1, got 0$"):
        R.SimilarityRequest(a, b, "mutual_knn", k=0)
    with pytest.raises(InvalidInput, match=r"^option 'eps' of measure 'cka' must be a finite number, got 'x'$"):
        R.SimilarityMatrixRequest("a", "b", "cka", options={"eps": "x"})
    with pytest.raises(InvalidInput, match=r"^give either grid or layers_a/layers_b, not both$"):
        R.SimilarityMatrixRequest("a", "b", "cka", grid=3, layers_a=[0])
    with pytest.raises(InvalidInput, match=r"^k must be at most 2 on this server \(ACTSTORE_MAX_K\), got 3$"):
        R.SimilarityRequest(a, b, "mutual_knn", k=3).check_limits(Settings(environ={}, max_k=2))
