"""One typed request per analysis: its arguments in Python names and enums, checked in one
place, and its cache key derived from every field.

A request is a frozen dataclass. Each field is declared with :func:`arg`, which names its check
(:class:`Check`: coerces an accepted value, raises :class:`InvalidInput` naming the field, the
value and what is allowed), its description (shown by GraphQL and the CLI) and, where a server
setting bounds it, that setting. The checks run when the request is built, so a request that
exists is valid; settings-dependent bounds run in :meth:`Request.check_limits`.

The cache key (:meth:`Request.key_payload`) is built from every field (layer references and
layer lists replaced by what they resolved to, so ``depth: 0.5`` and ``layer: 6`` share an
answer), the operation name, a format version and the value of every setting in
``answer_settings``: the settings that can change the answer (tests enumerate the settings
and fail when one that changes an answer is missing). Nothing builds a key by hand.

The interfaces derive from these classes: GraphQL arguments (``actstore.api.requests``), CLI
flags (``actstore.cli.requests``) and the notebook face's methods, so a name lives here once.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Protocol, runtime_checkable

import numpy as np

from actstore.config import Settings
from actstore.errors import InvalidInput, LimitExceeded
from actstore.layers import LayerRef

__all__ = [
    "AffinityRequest",
    "BridgeMethod",
    "BridgeRequest",
    "BridgeSweepRequest",
    "Check",
    "CkaMatrixRequest",
    "CkaRequest",
    "KEY_VERSION",
    "Matching",
    "Metric",
    "MutualKnnRequest",
    "NeighborsRequest",
    "NextTokenTransferRequest",
    "Precision",
    "Preprocess",
    "ProbeTransferRequest",
    "ProbeTransferSweepRequest",
    "AtlasRequest",
    "Request",
    "SaeCorrelationRequest",
    "SaeMatrixRequest",
    "SimilarityMatrixRequest",
    "SimilarityRequest",
    "arg",
    "plain",
    "request_types",
]

#: bump when the meaning of a stored answer changes (every cached answer is then recomputed)
KEY_VERSION = 3  # 3: SimilarityMatrix answers name their measure (a stored biased one would read unbiased_cka)


# --------------------------------------------------------------------------- enums
class Metric(enum.Enum):
    """Nearest-neighbour metric: cosine similarity, Euclidean distance or inner product."""

    COSINE = "cosine"
    L2 = "l2"
    DOT = "dot"


class BridgeMethod(enum.Enum):
    """How a linear bridge is fitted (METHODS.md, "Linear bridges")."""

    PROCRUSTES = "procrustes"
    RIDGE = "ridge"
    LOW_RANK = "low_rank"
    LASSO = "lasso"


class Preprocess(enum.Enum):
    """Preprocessing of activations before similarity and bridges (METHODS.md)."""

    NONE = "none"
    STANDARDIZE = "standardize"
    DROP_OUTLIER_DIMS = "drop_outlier_dims"
    PLATONIC = "platonic"  # platonic-rep's clip + unit rows (similarity queries only)


class Precision(enum.Enum):
    """Floating-point precision of the linear algebra (see :mod:`.precision`)."""

    AUTO = "auto"
    FLOAT32 = "float32"
    FLOAT64 = "float64"


class Matching(enum.Enum):
    """How SAE features are matched: greedy one-to-one or each A feature to its best B feature."""

    ONE_TO_ONE = "one_to_one"
    MANY_TO_ONE = "many_to_one"


# --------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class Check:
    """A field's check: ``fn(value, field)`` returns the accepted value (coerced) or raises
    InvalidInput; ``kind`` is the Python type the interfaces map (bool, int, float, str, an
    enum, LayerRef, or tuple[...] of one) and ``optional`` whether None is accepted."""

    fn: Callable[[Any, str], Any]
    kind: Any
    optional: bool = False
    item: Any = None  # for kind tuple: the item type

    def __call__(self, value: Any, field: str) -> Any:
        if value is None:
            if self.optional:
                return None
            raise InvalidInput(f"{field} is required", field=field, value=None, allowed="a value")
        return self.fn(value, field)


def _bool(value: Any, field: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidInput.of(field, value, "true or false")
    return bool(value)


def _int(lo: int | None = None, hi: int | None = None) -> Callable[[Any, str], int]:
    def check(value: Any, field: str) -> int:
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
            raise InvalidInput.of(field, value, "an integer" + _range(lo, hi))
        v = int(value)
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise InvalidInput.of(field, value, "an integer" + _range(lo, hi))
        return v

    return check


def _range(lo: float | None, hi: float | None, open_: bool = False) -> str:
    if lo is None and hi is None:
        return ""
    if hi is None:
        return f" >= {lo:g}" if not open_ else f" > {lo:g}"
    if lo is None:
        return f" <= {hi:g}"
    return f" strictly between {lo:g} and {hi:g}" if open_ else f" between {lo:g} and {hi:g}"


def _real(lo: float | None = None, hi: float | None = None, open_: bool = False) -> Callable[[Any, str], float]:
    def check(value: Any, field: str) -> float:
        allowed = ("a number" if lo is not None or hi is not None else "a finite number") + _range(lo, hi, open_)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InvalidInput.of(field, value, allowed)
        v = float(value)
        below = lo is not None and (v <= lo if open_ else v < lo)
        above = hi is not None and (v >= hi if open_ else v > hi)
        if below or above:
            raise InvalidInput.of(field, value, allowed)
        return v

    return check


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput.of(field, value, "a non-empty string")
    return value


def _enum(cls: type[enum.Enum]) -> Callable[[Any, str], enum.Enum]:
    def check(value: Any, field: str) -> enum.Enum:
        if isinstance(value, cls):
            return value
        raw = getattr(value, "value", value)
        for member in cls:
            if isinstance(raw, str) and raw.lower() in (member.value, member.name.lower()):
                return member
        raise InvalidInput.of(field, value, f"one of {', '.join(m.name for m in cls)}")

    return check


def _layer_ref(value: Any, field: str) -> LayerRef:
    if isinstance(value, LayerRef):
        return value
    raise InvalidInput.of(field, value, "a layer reference (model with a layer or a depth)")


def _int_tuple(value: Any, field: str) -> tuple[int, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) and not isinstance(value, np.ndarray):
        raise InvalidInput.of(field, value, "a list of integers")
    out = tuple(_int()(v, field) for v in value)
    return out


def _str_tuple(value: Any, field: str) -> tuple[str, ...]:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise InvalidInput.of(field, value, "a list of strings")
    return tuple(_text(v, field) for v in value)


def _floats(value: Any, field: str) -> tuple[float, ...]:
    arr = np.asarray(value, dtype=np.float64) if not isinstance(value, (str, bytes)) else None
    if arr is None or arr.ndim != 1:
        raise InvalidInput.of(field, "..." if arr is not None else value, "a list of numbers")
    if not np.isfinite(arr).all():
        raise InvalidInput(f"{field} contains NaN or inf", field=field, value="...", allowed="finite numbers")
    return tuple(arr.tolist())


def _options(value: Any, field: str) -> str | None:
    """A JSON object (a mapping, or its JSON text) as canonical JSON text: sorted keys, so
    equal options give equal requests and cache keys."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            why = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)  # e.g. too many digits
            raise InvalidInput.of(field, value, f"a JSON object (not valid JSON: {why})") from None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise InvalidInput.of(field, value, "a JSON object of option names and values")
    if not value:
        return None  # no options: the same request as none given
    try:
        return json.dumps(
            dict(value),
            sort_keys=True,
            separators=(",", ":"),
            allow_nan=False,
            default=lambda v: v.item() if isinstance(v, np.generic) else str(v),
        )
    except ValueError:
        raise InvalidInput.of(field, value, "a JSON object of finite numbers, strings and booleans") from None


BOOL = Check(_bool, bool)
TEXT = Check(_text, str)
OPT_TEXT = Check(_text, str, optional=True)
LAYER = Check(_layer_ref, LayerRef)
OPT_INTS = Check(_int_tuple, tuple, optional=True, item=int)
INTS = Check(_int_tuple, tuple, item=int)
OPT_TEXTS = Check(_str_tuple, tuple, optional=True, item=str)
OPT_FLOATS = Check(_floats, tuple, optional=True, item=float)
OPT_BOOL = Check(_bool, bool, optional=True)
OPT_OPTIONS = Check(_options, str, optional=True)


@dataclass(frozen=True)
class _Defaulted(Check):
    """A check that takes None for ``default`` (a GraphQL argument that is nullable with a
    default, as the contract writes ``byDataset: Boolean = false``)."""

    default: Any = None

    def __call__(self, value: Any, field: str) -> Any:
        return self.fn(self.default if value is None else value, field)


def defaulted(check: Check, default: Any) -> Check:
    """``check``, with None standing for ``default``."""
    return _Defaulted(check.fn, check.kind, True, check.item, default)


def integer(lo: int | None = None, hi: int | None = None, *, optional: bool = False) -> Check:
    return Check(_int(lo, hi), int, optional=optional)


def real(lo: float | None = None, hi: float | None = None, *, open_: bool = False, optional: bool = False) -> Check:
    return Check(_real(lo, hi, open_), float, optional=optional)


def choice(cls: type[enum.Enum]) -> Check:
    return Check(_enum(cls), cls)


def arg(
    default: Any = dataclasses.MISSING, *, check: Check, doc: str = "", limit: str | None = None, graphql: Any = None
) -> Any:
    """A request field: its default, :class:`Check`, description, the Settings field that
    bounds it (``limit``: an int's maximum, a list's length) and an optional GraphQL type
    override (e.g. an ID)."""
    meta = {"check": check, "doc": doc, "limit": limit, "graphql": graphql}
    return dataclasses.field(default=default, metadata=meta)


def plain(value: Any) -> Any:
    """JSON form of a field value: enums by value, layer references and tuples as lists."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, LayerRef):
        return {"model": value.model, "layer": value.layer, "depth": value.depth}
    if isinstance(value, (tuple, list)):
        return [plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- the base
@runtime_checkable
class SettingsSource(Protocol):
    """Where a key reads the settings in force (the result cache: see ResultCache.effective)."""

    def effective(self, name: str) -> Any: ...


class Request:
    """Base of every request (each subclass is a frozen dataclass of :func:`arg` fields).

    ``op``: the GraphQL field it answers (also the operation in its cache key).
    ``answer_settings``: the Settings fields whose value can change its answer.
    ``cached``: whether answers are kept in the results table.
    """

    op: ClassVar[str]
    answer_settings: ClassVar[tuple[str, ...]] = ()
    cached: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            check: Check = f.metadata["check"]
            object.__setattr__(self, f.name, check(getattr(self, f.name), f.name))
        self.check_fields()

    def check_fields(self) -> None:
        """Checks across fields (a subclass overrides; raise InvalidInput naming a field)."""

    def check_limits(self, settings: Settings) -> None:
        """The bounds that come from server settings (``limit`` of each field): an integer
        above its setting or a list longer than it is refused, naming the setting."""
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            name = f.metadata.get("limit")
            value = getattr(self, f.name)
            if name is None or value is None:
                continue
            cap = getattr(settings, name)
            env = f"ACTSTORE_{name.upper()}"
            if isinstance(value, tuple):
                if len(value) > cap:
                    error = LimitExceeded if name == "max_layers" else InvalidInput
                    raise error(
                        f"{f.name} has {len(value)} entries; this server allows at most {cap} ({env})",
                        field=f.name,
                        value=len(value),
                        allowed=f"at most {cap} entries",
                    )
            elif value > cap:
                if name == "max_layers":
                    raise LimitExceeded(
                        f"{f.name} = {value} layers; this server allows at most {cap} ({env})",
                        field=f.name,
                        value=value,
                        allowed=f"at most {cap}",
                    )
                raise InvalidInput(
                    f"{f.name} must be at most {cap} on this server ({env}), got {value}",
                    field=f.name,
                    value=value,
                    allowed=f"at most {cap}",
                )

    def fields(self) -> dict[str, Any]:
        """Every field by name, as given (after checks)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    def key_payload(
        self, settings: Settings | SettingsSource, resolved: Mapping[str, Any] | None = None
    ) -> dict[str, Any]:
        """What the cache key of this request hashes: the operation, every field (those in
        ``resolved`` replaced by what they resolved to: a layer reference by [model key, layer],
        a layer list by the stored layers) and every setting in ``answer_settings``."""
        resolved = dict(resolved or {})
        names = set(self.fields())
        unknown = set(resolved) - names
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field(s) {sorted(unknown)} to resolve")
        args = {name: plain(resolved[name] if name in resolved else value) for name, value in self.fields().items()}
        value = settings.effective if isinstance(settings, SettingsSource) else partial(getattr, settings)
        used = {name: plain(value(name)) for name in self.answer_settings}
        return {"op": self.op, "v": KEY_VERSION, "args": args, "settings": used}


def request_types() -> list[type[Request]]:
    """Every request class (subclasses of :class:`Request`, recursively)."""
    out: list[type[Request]] = []
    todo = list(Request.__subclasses__())
    while todo:
        cls = todo.pop(0)
        out.append(cls)
        todo.extend(cls.__subclasses__())
    return out


# settings that decide whether and how k-NN graphs are approximate (actstore.store.knn)
ANN_SETTINGS = ("ann_threshold", "ann_recall", "ann_latency_ms")

_DATASET = "restrict to the prompts of this dataset (default: every prompt both models share)"
_PREPROCESS = "preprocessing of each layer before comparing (fitted on the prompts compared)"
_THRESHOLD = "variance share above which a dimension is an outlier (drop_outlier_dims only; default 0.05)"
_BY_DATASET = "also answer within each dataset of the prompts, each on its own prompts"
_PRECISION = "floating-point precision of the linear algebra"


def _preprocess_arg() -> Any:
    return arg(Preprocess.NONE, check=choice(Preprocess), doc=_PREPROCESS)


def _threshold_arg() -> Any:
    return arg(None, check=real(0, 1, open_=True, optional=True), doc=_THRESHOLD)


def _precision_arg() -> Any:
    return arg(Precision.AUTO, check=choice(Precision), doc=_PRECISION)


def _layers_arg(model: str) -> Any:
    return arg(None, check=OPT_INTS, limit="max_layers", doc=f"layers of model {model} (default: every stored layer)")


def _grid_arg() -> Any:
    return arg(
        None,
        check=integer(2, optional=True),
        limit="max_layers",
        doc="an evenly spaced relative-depth grid of this many layers per model",
    )


def _split_seed_arg() -> Any:
    return arg(0, check=integer(0), doc="seed of the train/test split")


def _penalty_arg(doc: str = "bridge penalty (default: chosen by GCV)") -> Any:
    return arg(None, check=real(0, open_=True, optional=True), doc=doc)


def _fraction_arg(default: float) -> Any:
    return arg(default, check=real(0, 1, open_=True), doc=_TEST_FRACTION)


@dataclass(frozen=True, kw_only=True)
class _Prep:
    """The preprocessing fields (keyword-only, last in every request that has them)."""

    preprocess: Preprocess = _preprocess_arg()
    outlier_threshold: float | None = _threshold_arg()

    def check_fields(self) -> None:
        if self.outlier_threshold is not None and self.preprocess is not Preprocess.DROP_OUTLIER_DIMS:
            raise InvalidInput(
                f"outlier_threshold applies only to preprocess DROP_OUTLIER_DIMS, not "
                f"{self.preprocess.name}; leave it unset",
                field="outlier_threshold",
                value=self.outlier_threshold,
                allowed="unset",
            )


@dataclass(frozen=True, kw_only=True)
class _Precise:
    """The precision field (keyword-only, last)."""

    precision: Precision = _precision_arg()


def _matrix_layers(req: Any) -> None:
    if req.grid is not None and (req.layers_a is not None or req.layers_b is not None):
        raise InvalidInput(
            "give either grid or layers_a/layers_b, not both",
            field="grid",
            value=req.grid,
            allowed="unset when layers are given",
        )
    for name in ("layers_a", "layers_b"):
        if getattr(req, name) == ():
            raise InvalidInput(
                f"{name} is empty; give at least one layer or leave it unset",
                field=name,
                value=[],
                allowed="a non-empty list",
            )


# --------------------------------------------------------------------------- similarity
@dataclass(frozen=True)
class NeighborsRequest(Request):
    """The k stored prompts nearest to a stored prompt, a raw vector or new text at one layer."""

    op: ClassVar[str] = "nearestNeighbors"
    cached: ClassVar[bool] = False
    answer_settings: ClassVar[tuple[str, ...]] = ANN_SETTINGS

    at: LayerRef = arg(check=LAYER, doc="the layer searched")
    prompt_id: int | None = arg(
        None, check=integer(0, 2**63 - 1, optional=True), doc="a stored prompt's id", graphql="ID"
    )
    vector: tuple[float, ...] | None = arg(None, check=OPT_FLOATS, doc="a raw query vector of d_model values")
    text: str | None = arg(None, check=OPT_TEXT, doc="new text, encoded by the model at this layer")
    k: int = arg(10, check=integer(1), limit="max_k", doc="neighbours to return")
    dataset: str | None = arg(None, check=OPT_TEXT, doc="search only this dataset's prompts")
    metric: Metric = arg(Metric.COSINE, check=choice(Metric), doc="similarity or distance used")
    labelled: bool | None = arg(
        None, check=OPT_BOOL, doc="true: only labelled prompts as neighbours; false: only unlabelled; null: all"
    )

    def check_fields(self) -> None:
        given = [name for name in ("prompt_id", "vector", "text") if getattr(self, name) is not None]
        if len(given) != 1:
            raise InvalidInput(
                f"give exactly one of prompt_id, vector or text (got {', '.join(given) or 'none'})",
                field="prompt_id",
                value=None,
                allowed="exactly one of prompt_id, vector, text",
            )


@dataclass(frozen=True)
class MutualKnnRequest(_Prep, Request):
    """Mutual k-NN of two layers over their shared prompts, with its null k / (n - 1)."""

    op: ClassVar[str] = "mutualKnn"
    answer_settings: ClassVar[tuple[str, ...]] = ANN_SETTINGS

    a: LayerRef = arg(check=LAYER, doc="first layer")
    b: LayerRef = arg(check=LAYER, doc="second layer")
    k: int = arg(10, check=integer(1), limit="max_k", doc="neighbours per prompt")
    dataset: str | None = arg(None, check=OPT_TEXT, doc=_DATASET)
    by_dataset: bool = arg(False, check=BOOL, doc=_BY_DATASET)


@dataclass(frozen=True)
class AffinityRequest(_Prep, Request):
    """Mutual k-NN of every layer pair of two models, the generalized-diagonal test and the
    argmax path (one k-NN graph per layer)."""

    op: ClassVar[str] = "affinityMatrix"
    answer_settings: ClassVar[tuple[str, ...]] = ANN_SETTINGS

    model_a: str = arg(check=TEXT, doc="model of the rows")
    model_b: str = arg(check=TEXT, doc="model of the columns")
    k: int = arg(10, check=integer(1), limit="max_k", doc="neighbours per prompt")
    dataset: str | None = arg(None, check=OPT_TEXT, doc=_DATASET)
    layers_a: tuple[int, ...] | None = _layers_arg("A")
    layers_b: tuple[int, ...] | None = _layers_arg("B")
    by_dataset: bool = arg(False, check=BOOL, doc=_BY_DATASET)
    grid: int | None = _grid_arg()

    def check_fields(self) -> None:
        _Prep.check_fields(self)
        _matrix_layers(self)


@dataclass(frozen=True)
class CkaRequest(_Prep, _Precise, Request):
    """Linear CKA of two layers over their shared prompts, with an optional permutation test."""

    op: ClassVar[str] = "cka"

    a: LayerRef = arg(check=LAYER, doc="first layer")
    b: LayerRef = arg(check=LAYER, doc="second layer")
    debiased: bool = arg(True, check=BOOL, doc="the unbiased HSIC estimator (Song et al. 2012); false: biased CKA")
    permutations: int = arg(
        0, check=integer(0), limit="max_permutations", doc="permutations of a test of no relation (0: no p-value)"
    )
    dataset: str | None = arg(None, check=OPT_TEXT, doc=_DATASET)
    seed: int = arg(0, check=integer(), doc="seed of the permutations")
    by_dataset: bool = arg(False, check=BOOL, doc=_BY_DATASET)


@dataclass(frozen=True)
class CkaMatrixRequest(_Prep, _Precise, Request):
    """Linear CKA of every layer pair of two models (or of a relative-depth grid)."""

    op: ClassVar[str] = "ckaMatrix"

    model_a: str = arg(check=TEXT, doc="model of the rows")
    model_b: str = arg(check=TEXT, doc="model of the columns")
    debiased: bool = arg(True, check=BOOL, doc="the unbiased HSIC estimator; false: biased CKA")
    dataset: str | None = arg(None, check=OPT_TEXT, doc=_DATASET)
    layers_a: tuple[int, ...] | None = _layers_arg("A")
    layers_b: tuple[int, ...] | None = _layers_arg("B")
    grid: int | None = _grid_arg()
    by_dataset: bool = arg(False, check=BOOL, doc=_BY_DATASET)

    def check_fields(self) -> None:
        _Prep.check_fields(self)
        _matrix_layers(self)


# --------------------------------------------------------------------------- bridges
_TEST_FRACTION = "share of prompts held out for scoring"


class _BridgeArgs:
    """Checks shared by the bridge requests (method, rank, alpha, scale)."""

    alpha: float | None  # a field of every request using these checks (a plain annotation: no dataclass field here)

    def check_fields(self) -> None:
        _Prep.check_fields(self)  # type: ignore[arg-type]
        method, rank = getattr(self, "method", BridgeMethod.RIDGE), getattr(self, "rank", None)
        if method is BridgeMethod.LOW_RANK and rank is None:
            raise InvalidInput(
                "method LOW_RANK needs rank (an integer >= 1)", field="rank", value=None, allowed="an integer >= 1"
            )
        if rank is not None and method is not BridgeMethod.LOW_RANK:
            raise InvalidInput(
                f"rank applies only to method LOW_RANK, not {method.name}; leave it unset",
                field="rank",
                value=rank,
                allowed="unset",
            )
        if method is BridgeMethod.PROCRUSTES and getattr(self, "alpha", None) is not None:
            raise InvalidInput(
                "alpha does not apply to method PROCRUSTES; leave it unset",
                field="alpha",
                value=self.alpha,
                allowed="unset",
            )
        if getattr(self, "scale", False) and method is not BridgeMethod.PROCRUSTES:
            raise InvalidInput(
                f"scale applies only to method PROCRUSTES, not {method.name}; leave it unset",
                field="scale",
                value=True,
                allowed="false",
            )


@dataclass(frozen=True)
class BridgeRequest(_BridgeArgs, _Prep, _Precise, Request):
    """A linear map from source to target activations, fitted and scored on held-out prompts."""

    op: ClassVar[str] = "bridge"

    source: LayerRef = arg(check=LAYER, doc="the layer mapped from")
    target: LayerRef = arg(check=LAYER, doc="the layer mapped to")
    method: BridgeMethod = arg(BridgeMethod.RIDGE, check=choice(BridgeMethod), doc="how the map is fitted")
    rank: int | None = arg(None, check=integer(1, optional=True), doc="rank of a LOW_RANK bridge")
    alpha: float | None = arg(
        None,
        check=real(0, open_=True, optional=True),
        doc="ridge / low-rank penalty or lasso weight (default: chosen by GCV)",
    )
    train_dataset: str | None = arg(None, check=OPT_TEXT, doc="dataset the bridge is fitted on")
    eval_dataset: str | None = arg(None, check=OPT_TEXT, doc="dataset the bridge is scored on")
    test_fraction: float = _fraction_arg(0.2)
    seed: int = _split_seed_arg()
    scale: bool = arg(False, check=BOOL, doc="PROCRUSTES only: also fit an isotropic scale")


@dataclass(frozen=True)
class BridgeSweepRequest(_Prep, _Precise, Request):
    """Reduced-rank ridge bridges at several ranks from one ridge fit and one SVD."""

    op: ClassVar[str] = "bridgeSweep"

    source: LayerRef = arg(check=LAYER, doc="the layer mapped from")
    target: LayerRef = arg(check=LAYER, doc="the layer mapped to")
    ranks: tuple[int, ...] = arg(check=INTS, doc="ranks of the sweep")
    alpha: float | None = _penalty_arg("ridge penalty (default: chosen by GCV)")
    train_dataset: str | None = arg(None, check=OPT_TEXT, doc="dataset the bridges are fitted on")
    eval_dataset: str | None = arg(None, check=OPT_TEXT, doc="dataset the bridges are scored on")
    test_fraction: float = _fraction_arg(0.2)
    seed: int = _split_seed_arg()


@dataclass(frozen=True)
class ProbeTransferRequest(_BridgeArgs, _Prep, _Precise, Request):
    """A probe trained on the source, scored on target activations mapped through a bridge."""

    op: ClassVar[str] = "probeTransfer"

    source: LayerRef = arg(check=LAYER, doc="the layer the probe is trained on")
    target: LayerRef = arg(check=LAYER, doc="the layer mapped into the source's space")
    task_dataset: str = arg(check=TEXT, doc="labelled dataset of the task")
    bridge_dataset: str | None = arg(
        None,
        check=OPT_TEXT,
        doc="prompts the frozen bridge is fitted on (default: every shared prompt outside the task)",
    )
    method: BridgeMethod = arg(BridgeMethod.RIDGE, check=choice(BridgeMethod), doc="how the bridge is fitted")
    rank: int | None = arg(None, check=integer(1, optional=True), doc="rank of a LOW_RANK bridge")
    test_fraction: float = _fraction_arg(0.3)
    seed: int = _split_seed_arg()
    alpha: float | None = _penalty_arg()


@dataclass(frozen=True)
class ProbeTransferSweepRequest(_Prep, _Precise, Request):
    """Probe transfer through reduced-rank ridge bridges at every rank of ``ranks``."""

    op: ClassVar[str] = "probeTransferSweep"

    source: LayerRef = arg(check=LAYER, doc="the layer the probe is trained on")
    target: LayerRef = arg(check=LAYER, doc="the layer mapped into the source's space")
    task_dataset: str = arg(check=TEXT, doc="labelled dataset of the task")
    ranks: tuple[int, ...] = arg(check=INTS, doc="ranks of the sweep")
    bridge_dataset: str | None = arg(None, check=OPT_TEXT, doc="prompts the frozen bridges are fitted on")
    alpha: float | None = _penalty_arg("ridge penalty (default: chosen by GCV)")
    test_fraction: float = _fraction_arg(0.3)
    seed: int = _split_seed_arg()


@dataclass(frozen=True)
class NextTokenTransferRequest(_Precise, Request):
    """Next-token probe transfer across tokenizers (needs next tokens stored at ingest)."""

    op: ClassVar[str] = "nextTokenTransfer"

    source: LayerRef = arg(check=LAYER, doc="the layer the probe is trained on")
    target: LayerRef = arg(check=LAYER, doc="the layer mapped into the source's space")
    dataset: str = arg(check=TEXT, doc="dataset whose next tokens are the labels")
    bridge_dataset: str | None = arg(None, check=OPT_TEXT, doc="prompts the frozen bridge is fitted on")
    method: BridgeMethod = arg(BridgeMethod.RIDGE, check=choice(BridgeMethod), doc="how the bridge is fitted")
    rank: int | None = arg(None, check=integer(1, optional=True), doc="rank of a LOW_RANK bridge")
    alpha: float | None = _penalty_arg()
    classes: int = arg(500, check=integer(2), doc="the most frequent shared next tokens used as classes")
    test_fraction: float = _fraction_arg(0.3)
    seed: int = _split_seed_arg()

    def check_fields(self) -> None:
        if self.method is BridgeMethod.LOW_RANK and self.rank is None:
            raise InvalidInput(
                "method LOW_RANK needs rank (an integer >= 1)", field="rank", value=None, allowed="an integer >= 1"
            )
        if self.rank is not None and self.method is not BridgeMethod.LOW_RANK:
            raise InvalidInput(
                f"rank applies only to method LOW_RANK, not {self.method.name}; leave it unset",
                field="rank",
                value=self.rank,
                allowed="unset",
            )


# --------------------------------------------------------------------------- the atlas
def _models(value: Any, field: str) -> tuple[str, ...]:
    names = _str_tuple(value, field)
    if len(names) < 2:
        raise InvalidInput.of(field, list(names), "at least 2 model keys")
    repeated = sorted({m for m in names if names.count(m) > 1})
    if repeated:
        raise InvalidInput(
            f"{field} names {', '.join(repeated)} more than once",
            field=field,
            value=list(names),
            allowed="distinct model keys",
        )
    return names


@dataclass(frozen=True)
class AtlasRequest(_Prep, Request):
    """Every pair of a set of models compared layer by layer with one measure, over the prompts
    all of them share: each pair's matrix, argmax path and diagonal test, the mean of the
    matrices resized to a square, and the largest similarity of every pair."""

    op: ClassVar[str] = "atlas"
    answer_settings: ClassVar[tuple[str, ...]] = ANN_SETTINGS

    models: tuple[str, ...] = arg(
        check=Check(_models, tuple, item=str),
        limit="max_atlas_models",
        doc="the models compared, in the order their pairs are listed",
    )
    measure: str = arg("mutual_knn", check=TEXT, doc="a registered similarity measure (see measures)")
    k: int = arg(10, check=integer(1), limit="max_k", doc="neighbours per prompt (k-NN measures)")
    dataset: str | None = arg(None, check=OPT_TEXT, doc="restrict to the prompts of this dataset")
    grid: int | None = _grid_arg()
    resize: int = arg(20, check=integer(2, 1000), doc="depths per axis of the resized square matrices")


# --------------------------------------------------------------------------- SAEs
_MATCHING = "how features are matched: greedy one-to-one, or each A feature to its best B feature"


@dataclass(frozen=True)
class SaeCorrelationRequest(Request):
    """SAE features of two layers matched by activation correlation, compared by SVCCA / RSA
    against random pairings."""

    op: ClassVar[str] = "saeFeatureCorrelation"

    a: str = arg(check=TEXT, doc="id of the first SAE", graphql="SaeRef")
    b: str = arg(check=TEXT, doc="id of the second SAE", graphql="SaeRef")
    dataset: str | None = arg(None, check=OPT_TEXT, doc=_DATASET)
    matching: Matching = arg(Matching.ONE_TO_ONE, check=choice(Matching), doc=_MATCHING)
    random_pairs: int = arg(100, check=integer(1), limit="max_permutations", doc="random pairings of the baseline")
    seed: int = arg(0, check=integer(), doc="seed of the random pairings")
    min_correlation: float | None = arg(
        None, check=real(-1, 1, optional=True), doc="drop matched pairs weaker than this"
    )
    keywords: tuple[str, ...] | None = arg(
        None, check=OPT_TEXTS, doc="restrict both SAEs to features whose top prompts contain these"
    )
    top_prompts: int = arg(10, check=integer(1, 1000), doc="top prompts per feature read for keywords")
    keyword_share: float = arg(0.5, check=real(0, 1), doc="share of top prompts that must contain a keyword, in (0, 1]")

    def check_fields(self) -> None:
        if self.keyword_share == 0:
            raise InvalidInput.of("keyword_share", 0.0, "a number in (0, 1]")
        if self.keywords is not None and not any(k.strip() for k in self.keywords):
            raise InvalidInput.of("keywords", list(self.keywords), "at least one non-empty word")


@dataclass(frozen=True)
class SaeMatrixRequest(Request):
    """SVCCA of SAE features for every SAE layer pair of two models."""

    op: ClassVar[str] = "saeMatrix"

    model_a: str = arg(check=TEXT, doc="model of the rows")
    model_b: str = arg(check=TEXT, doc="model of the columns")
    dataset: str | None = arg(None, check=OPT_TEXT, doc=_DATASET)
    matching: Matching = arg(Matching.ONE_TO_ONE, check=choice(Matching), doc=_MATCHING)
    random_pairs: int = arg(100, check=integer(1), limit="max_permutations", doc="random pairings of the baseline")
    seed: int = arg(0, check=integer(), doc="seed of the random pairings")
    saes_a: tuple[str, ...] | None = arg(
        None,
        check=OPT_TEXTS,
        limit="max_layers",
        graphql="IDs",
        doc="SAE ids of model A (default: the latest one per stored layer)",
    )
    saes_b: tuple[str, ...] | None = arg(
        None,
        check=OPT_TEXTS,
        limit="max_layers",
        graphql="IDs",
        doc="SAE ids of model B (default: the latest one per stored layer)",
    )


# --------------------------------------------------------------------------- every measure
_MEASURE = "a registered similarity measure (the measures query lists them)"
_K = "neighbours per prompt: required by the k-NN measures, refused by the others"
_OPTIONS = 'the measure\'s options as a JSON object, e.g. {"unbiased": false} (the measures query lists them)'


class _MeasureFields:
    """Checks of ``measure``, ``k`` and ``options`` against the registry (imported here, on
    first use, so that building the command line needs no numerics), and of the preprocessing."""

    # fields of every request using these checks (plain annotations: no dataclass fields here)
    measure: str
    k: int | None
    options: str | None

    def check_fields(self) -> None:
        from actstore.analysis import AnalysisError
        from actstore.analysis import measures as registry

        _Prep.check_fields(self)  # type: ignore[arg-type]
        name, k, text = self.measure, self.k, self.options
        try:
            m = registry.get(name)
        except AnalysisError as exc:
            raise InvalidInput(
                str(exc), field="measure", value=name, allowed=f"one of {', '.join(registry.names())}"
            ) from None
        given = json.loads(text) if text is not None else {}
        if "k" in given:
            raise InvalidInput(
                "give k as the k argument, not inside options", field="options", value=text, allowed="options without k"
            )
        if m.uses_k and k is None:
            raise InvalidInput(
                f"measure {m.name!r} needs k (neighbours per prompt, an integer >= 1)",
                field="k",
                value=None,
                allowed="an integer >= 1",
            )
        if not m.uses_k and k is not None:
            knn = ", ".join(x.name for x in registry.measures() if x.uses_k)
            raise InvalidInput(
                f"k applies only to the k-NN measures ({knn}), not {m.name!r}; leave it unset",
                field="k",
                value=k,
                allowed="unset",
            )
        try:
            m.options_for({**given, **({"k": k} if m.uses_k else {})})
        except AnalysisError as exc:
            field = "k" if "'k'" in str(exc) else "options"
            raise InvalidInput(
                str(exc), field=field, value=k if field == "k" else text, allowed="the options the measures query lists"
            ) from None

    def measure_options(self) -> dict[str, Any]:
        """Every option of the measure (defaults filled in, ``k`` included for k-NN measures)."""
        from actstore.analysis import measures as registry

        m = registry.get(self.measure)
        text, k = self.options, self.k
        given = json.loads(text) if text is not None else {}
        return m.options_for({**given, **({"k": k} if m.uses_k else {})})


@dataclass(frozen=True)
class SimilarityRequest(_MeasureFields, Request):
    """Any registered similarity measure of two layers over their shared prompts, with an
    optional (stratified) permutation test."""

    op: ClassVar[str] = "similarity"
    # answer_settings: none; the registry computes exact k-NN graphs from the rows (no ANN index)

    a: LayerRef = arg(check=LAYER, doc="first layer")
    b: LayerRef = arg(check=LAYER, doc="second layer")
    measure: str = arg(check=TEXT, doc=_MEASURE)
    k: int | None = arg(None, check=integer(1, optional=True), limit="max_k", doc=_K)
    options: str | None = arg(None, check=OPT_OPTIONS, doc=_OPTIONS, graphql="JSON")
    dataset: str | None = arg(None, check=OPT_TEXT, doc=_DATASET)
    preprocess: Preprocess | None = arg(
        Preprocess.NONE, check=defaulted(choice(Preprocess), Preprocess.NONE), doc=_PREPROCESS
    )
    outlier_threshold: float | None = _threshold_arg()
    permutations: int = arg(
        0, check=integer(0), limit="max_permutations", doc="permutations of a test of no relation (0: no p-value)"
    )
    seed: int = arg(0, check=integer(0), doc="seed of the permutations")
    by_dataset: bool | None = arg(False, check=defaulted(BOOL, False), doc=_BY_DATASET)


@dataclass(frozen=True)
class SimilarityMatrixRequest(_MeasureFields, Request):
    """Any registered similarity measure for every layer pair of two models (or of a
    relative-depth grid); each layer's statistics are computed once."""

    op: ClassVar[str] = "similarityMatrix"
    # answer_settings: none (exact k-NN graphs, as for SimilarityRequest)

    model_a: str = arg(check=TEXT, doc="model of the rows")
    model_b: str = arg(check=TEXT, doc="model of the columns")
    measure: str = arg(check=TEXT, doc=_MEASURE)
    k: int | None = arg(None, check=integer(1, optional=True), limit="max_k", doc=_K)
    options: str | None = arg(None, check=OPT_OPTIONS, doc=_OPTIONS, graphql="JSON")
    dataset: str | None = arg(None, check=OPT_TEXT, doc=_DATASET)
    grid: int | None = _grid_arg()
    layers_a: tuple[int, ...] | None = _layers_arg("A")
    layers_b: tuple[int, ...] | None = _layers_arg("B")
    preprocess: Preprocess | None = arg(
        Preprocess.NONE, check=defaulted(choice(Preprocess), Preprocess.NONE), doc=_PREPROCESS
    )
    outlier_threshold: float | None = _threshold_arg()
    by_dataset: bool | None = arg(False, check=defaulted(BOOL, False), doc=_BY_DATASET)

    def check_fields(self) -> None:
        _MeasureFields.check_fields(self)
        _matrix_layers(self)
