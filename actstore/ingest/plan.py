"""One ingest plan, shared by the local pipeline and the Ray engine.

An ingest is planned in two steps, each done once whatever the engine:

1. :func:`plan_ingest` (before any model loads): the arguments (batch size, token cap,
   storage dtype, token site, chat template, dataset name, key), the prompts file read and
   validated completely, the store opened (None when it does not exist yet: it is created only
   once the model has loaded, so a failed ingest leaves none) and, without a prompts file, the
   dataset known. Returns an :class:`IngestPlan` (frozen).
2. :meth:`IngestPlan.claim` (once the model's :class:`ModelInfo` is known, from a loaded
   runner here or from a Ray actor): the layers resolved, the chat template checked, the key
   claimed (another model or extraction spec under it is refused before any prompt is added),
   the prompts file added to the dataset, and the prompts still to do found. Returns an
   :class:`IngestWork` (frozen) that the engine runs.

:func:`actstore.ingest.pipeline.ingest` and :func:`actstore.ingest.ray_engine.ingest_ray`
take the same arguments as :func:`plan_ingest` (plus their engine's own).
The key defaults to :func:`actstore.ingest.keys.default_model_key` (the model's name).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from actstore.config import Settings
from actstore.errors import Conflict, InvalidInput, NotFound
from actstore.ingest.field_errors import with_field
from actstore.ingest.keys import default_model_key
from actstore.ingest.sources import PromptSet, read_prompts
from actstore.ingest.token_sites import check_token_site
from actstore.layers import LayerSpec, parse_layer_spec

if TYPE_CHECKING:
    from actstore.ingest.runner import ModelRunner
    from actstore.store import Store

__all__ = [
    "STORAGE_DTYPES",
    "IngestNotice",
    "IngestPlan",
    "IngestWork",
    "ModelInfo",
    "check_args",
    "check_model_matches",
    "dataset_prompts",
    "open_store",
    "plan_ingest",
    "store_and_prompts",
    "stored_everywhere",
]

log = logging.getLogger(__name__)

STORAGE_DTYPES = ("float16", "float32")


@dataclass(frozen=True)
class IngestNotice:
    """A warning about an ingest that runs anyway. ``field``: the argument it concerns
    (``token``...), ``suggest``: the value that would avoid it; the command line names the flag."""

    field: str
    message: str
    suggest: str | None = None

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class ModelInfo:
    """What a plan needs of a loaded model (a Ray driver gets it from an actor)."""

    source: str
    revision: str | None
    architecture: str
    n_layers: int
    d_model: int
    quantization: str | None
    fingerprint: str
    max_tokens: int | None  # effective (capped by the model's positions)
    bidirectional: bool = False  # a BERT-style encoder (its last token is a separator)
    has_lm_head: bool = False

    @classmethod
    def of(cls, runner: ModelRunner, max_tokens: int | None, token: str, chat_template: bool) -> ModelInfo:
        """The info of a loaded runner for this extraction spec (InvalidInput when
        ``chat_template`` and the tokenizer has none)."""
        from actstore.ingest.fingerprint import model_fingerprint

        if chat_template:
            runner.apply_chat_template([""])
        eff = runner.effective_max_tokens(max_tokens)
        return cls(
            runner.source,
            runner.revision,
            runner.architecture,
            runner.n_layers,
            runner.d_model,
            runner.quantization,
            model_fingerprint(runner, eff, token, chat_template),
            eff,
            bool(getattr(runner, "bidirectional", False)),
            runner.lm_head is not None,
        )


@dataclass(frozen=True)
class IngestWork:
    """A claimed ingest: what the engine computes and writes.

    ``ids`` int64 [n] ascending and ``texts`` [n]: every prompt of the dataset; ``done`` bool
    [n]: stored for every layer (and with next tokens when asked), skipped; ``layers``: the
    resolved layer indices; ``write_kwargs``: what every activation write records.
    """

    plan: IngestPlan
    store: Store
    info: ModelInfo
    layers: list[int]
    ids: np.ndarray
    texts: list[str]
    done: np.ndarray
    added: int
    notices: tuple[IngestNotice, ...] = ()

    @property
    def todo(self) -> int:
        return int((~self.done).sum())

    @property
    def write_kwargs(self) -> dict[str, Any]:
        i, p = self.info, self.plan
        return dict(
            n_layers=i.n_layers,
            source=i.source,
            architecture=i.architecture,
            dtype=p.dtype,
            revision=i.revision,
            fingerprint=i.fingerprint,
            quantization=i.quantization,
            token=p.token,
            chat_template=p.chat_template,
        )

    @property
    def row_bytes(self) -> int:
        """Bytes of one stored row of one layer: the vector and its prompt id."""
        return self.info.d_model * (2 if self.plan.dtype == "float16" else 4) + 8


@dataclass(frozen=True)
class IngestPlan:
    """An ingest checked before any model loads (see the module docstring).

    ``source``: the model as given (hub id, folder, GGUF file, or a loaded runner);
    ``opened``: the store when it exists, else None (created by :meth:`claim`);
    ``prompt_set``: the validated prompts file, or None.
    """

    store: Any
    source: Any
    key: str
    dataset: str
    prompt_set: PromptSet | None
    opened: Store | None
    layers: LayerSpec = "all"
    batch_size: int = 32
    max_tokens: int | None = 512
    dtype: str = "float16"
    device: str = "auto"
    compute_dtype: str | None = None
    revision: str | None = None
    token: str = "last"
    chat_template: bool = False
    next_tokens: bool = False
    settings: Settings | None = field(default=None, compare=False)

    def claim(self, info: ModelInfo) -> IngestWork:
        """Resolve the layers, claim the key for this model, add the prompts file and find what
        is still to do (see the module docstring); warnings come back as ``notices`` (the engine
        passes them on or logs them)."""
        wanted = parse_layer_spec(self.layers, info.n_layers)
        if self.next_tokens and not info.has_lm_head:
            raise with_field(
                InvalidInput(
                    "next tokens need the model's LM head: load the runner with ModelRunner(..., lm_head=True)"
                ),
                "next_tokens",
            )
        st = self.opened if self.opened is not None else open_store(self.store, self.settings)
        check_model_matches(st, self.key, info, self.dtype, info.fingerprint, self.token, self.chat_template)
        ids, texts, added = dataset_prompts(st, self.dataset, self.prompt_set)
        done = stored_everywhere(st, self.key, ids, wanted, self.next_tokens)
        notices = []
        if self.token == "last" and info.bidirectional:
            notices.append(
                IngestNotice(
                    "token",
                    f"model {info.source!r} ({info.architecture}) is a BERT-style encoder: its last "
                    "token is the separator its tokenizer appends (e.g. [SEP]), the same token for every "
                    "prompt; the mean over the tokens (token site mean) or the first token (first, [CLS]) "
                    "is what sentence-embedding users pool",
                    suggest="mean",
                )
            )
        return IngestWork(self, st, info, wanted, ids, texts, done, added, tuple(notices))


def plan_ingest(
    store: Store | str | Path,
    model: Any,
    dataset: str,
    *,
    prompts_file: str | Path | None = None,
    key: str | None = None,
    layers: LayerSpec = "all",
    batch_size: int = 32,
    max_tokens: int | None = 512,
    dtype: str = "float16",
    device: str = "auto",
    compute_dtype: str | None = None,
    revision: str | None = None,
    text_column: str | int = "text",
    label_column: str | int | None = "label",
    token: str = "last",
    chat_template: bool = False,
    next_tokens: bool = False,
    settings: Settings | None = None,
) -> IngestPlan:
    """The checks of an ingest before any model loads, done once for either engine.

    ``model``: a hub id, a folder, a .gguf file, or a loaded ModelRunner (local engine only).
    ``key``: the model's key in the store (default: :func:`default_model_key` of the source,
    i.e. the model's own name). Other arguments as :func:`actstore.ingest.pipeline.ingest`.
    InvalidInput / NotFound for a bad argument, prompts file, store or unknown dataset.
    """
    from actstore.store.tables import check_model_key

    check_args(batch_size, max_tokens, dtype)
    check_token_site(token)
    if not isinstance(chat_template, bool):
        raise InvalidInput(f"chat_template must be true or false, got {chat_template!r}")
    if not isinstance(next_tokens, bool):
        raise InvalidInput(f"next_tokens must be true or false, got {next_tokens!r}")
    if not isinstance(dataset, str) or not dataset.strip():
        raise InvalidInput(f"dataset must be a non-empty name, got {dataset!r}")
    if isinstance(model, (str, Path)):
        default = None if key is not None else default_model_key(model)
    else:
        default = None if key is not None else default_model_key(model.source)
    key = check_model_key(key if key is not None else default)
    opened, prompt_set = store_and_prompts(store, dataset, prompts_file, text_column, label_column, settings)
    return IngestPlan(
        store,
        model,
        key,
        dataset,
        prompt_set,
        opened,
        layers,
        batch_size,
        max_tokens,
        dtype,
        device,
        compute_dtype,
        revision,
        token,
        chat_template,
        next_tokens,
        settings,
    )


def open_store(store: Store | str | Path, settings: Settings | None = None, *, create: bool = True) -> Store:
    """``store`` itself, or the store at that URI (by default created if missing: ingests and
    imports create stores; ``create=False`` raises NotFound for a missing one)."""
    from actstore.store import Store as StoreClass

    if isinstance(store, StoreClass):
        return store
    return StoreClass.open(str(store), create=create, settings=settings)


def check_args(batch_size: int, max_tokens: int | None, dtype: str) -> None:
    """InvalidInput for a bad batch size, token cap or storage dtype."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInput(f"batch_size must be an integer >= 1, got {batch_size!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1):
        raise InvalidInput(f"max_tokens must be an integer >= 1, got {max_tokens!r}")
    if dtype not in STORAGE_DTYPES:
        raise InvalidInput(f"storage dtype must be float16 or float32, got {dtype!r}")


def store_and_prompts(
    store: Store | str | Path,
    dataset: str,
    prompts_file: str | Path | None,
    text_column: str | int,
    label_column: str | int | None,
    settings: Settings | None,
) -> tuple[Store | None, PromptSet | None]:
    """The checks of an ingest before any model loads: (the store, None when it does not exist
    yet; the whole prompts file read and validated, None without one). A missing store is
    created only once the model has loaded, so a failed ingest leaves none; without a prompts
    file the dataset must already exist (NotFound naming the known ones)."""
    prompt_set = None
    if prompts_file is not None:
        prompt_set = read_prompts(prompts_file, text_column=text_column, label_column=label_column)
    try:
        st: Store | None = open_store(store, settings, create=False)
    except NotFound:
        if prompt_set is None:
            raise with_field(
                NotFound(
                    f"unknown dataset {dataset!r}: there is no actstore store at {str(store)!r} "
                    "yet; pass a prompts file to add its prompts"
                ),
                "prompts",
            ) from None
        st = None
    if st is not None and prompt_set is None:
        try:
            st.prompts.ids(dataset)
        except NotFound as e:
            raise with_field(NotFound(f"{e}; pass a prompts file to add its prompts"), "prompts") from None
    return st, prompt_set


def dataset_prompts(st: Store, dataset: str, prompt_set: Any | None) -> tuple[np.ndarray, list[str], int]:
    """Add the prompts of ``prompt_set`` (a read prompts file, or None) to ``dataset``; return
    (ids int64 [n] ascending, texts [n] in id order, prompts added) of the whole dataset:
    the file's prompts and any stored before."""
    added = 0
    text_of: dict[int, str] = {}
    if prompt_set is not None:
        before = _count(st, dataset)
        ids_list = st.add_prompts(dataset, prompt_set.texts, labels=prompt_set.labels, meta=prompt_set.meta)
        added = _count(st, dataset) - before
        text_of = dict(zip(ids_list, prompt_set.texts))
    ids = st.prompts.ids(dataset)
    missing = [int(i) for i in ids if int(i) not in text_of]
    if missing:
        text_of.update((p.id, p.text) for p in st.prompts.get(missing))
    return ids, [text_of[int(i)] for i in ids], added


def stored_everywhere(
    st: Store, key: str, ids: np.ndarray, layers: Sequence[int], next_tokens: bool = False
) -> np.ndarray:
    """bool [len(ids)]: which prompts are stored for every one of ``layers`` of model ``key``
    (and have next tokens, when asked): what a resumed ingest skips."""
    done = np.ones(len(ids), dtype=bool)
    for layer in layers:
        done &= np.isin(ids, st.activations.ids(key, layer))
    if next_tokens:
        done &= np.isin(ids, st.next_tokens.ids(key))
    return done


def _count(st: Store, dataset: str) -> int:
    try:
        return len(st.prompts.ids(dataset))
    except NotFound:
        return 0


def check_model_matches(
    st: Store,
    key: str,
    runner: ModelInfo | ModelRunner,
    dtype: str,
    fingerprint: str,
    token: str = "last",
    chat_template: bool = False,
) -> None:
    """Refuse to mix a different model (or storage dtype) into an existing key, before any
    prompt is added: InvalidInput for another shape or dtype, Conflict for another token
    site, chat template or fingerprint (checked again by every write)."""
    info = st.models.find(key)
    if info is None:
        return
    diffs = []
    if info.n_layers != runner.n_layers:
        diffs.append(f"n_layers {info.n_layers} vs {runner.n_layers}")
    if info.d_model != runner.d_model:
        diffs.append(f"d_model {info.d_model} vs {runner.d_model}")
    if info.architecture and info.architecture != runner.architecture:
        diffs.append(f"architecture {info.architecture} vs {runner.architecture}")
    if diffs:
        raise with_field(
            InvalidInput(
                f"model key {key!r} is already used by another model ({info.source or 'unknown source'}: "
                f"{'; '.join(diffs)}); choose another key"
            ),
            "key",
        )
    if info.dtype != dtype:
        raise with_field(
            InvalidInput(
                f"model {key!r} is stored as {info.dtype}; ingest it with storage dtype {info.dtype} (got {dtype})"
            ),
            "dtype",
        )
    if info.fingerprint and (info.token, info.chat_template) != (token, chat_template):

        def spec(t: str, c: bool) -> str:
            return f"token site {t}" + (" and the chat template" if c else "")

        raise with_field(
            Conflict(
                f"model key {key!r} holds activations extracted with {spec(info.token, info.chat_template)}; "
                f"this ingest asks for {spec(token, chat_template)}: ingest it under another key"
            ),
            "key",
        )
    st.models.check_write(info, fingerprint, runner.source)
    if info.source and info.source != runner.source:
        log.info("model %r was stored from %s; now ingesting from %s", key, info.source, runner.source)
