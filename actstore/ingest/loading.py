"""Model loading for an ingest: resolve the source, load config, tokenizer and weights.

Sources
    A hub id, a local folder (``config.json`` + ``*.safetensors`` + tokenizer files), a
    ``.gguf`` file (or a folder without ``config.json`` holding exactly one), or
    ``OWNER/REPO/FILE.gguf`` on the hub (fetched into the Hugging Face cache). Loaded with
    ``AutoConfig`` / ``AutoTokenizer`` / ``AutoModel`` (the base model, no LM head; with
    ``lm_head=True`` the causal LM), ``trust_remote_code=False`` and ``use_safetensors=True``;
    a GGUF with ``gguf_file=`` (config, tokenizer and weights all from the file, dequantized by
    transformers; needs the ``gguf`` and ``accelerate`` packages).
    A hub id when the Hub cannot be reached (``HF_HUB_OFFLINE=1`` or no network; both read
    through :class:`actstore.config.Settings`) is only looked up in the local cache.

GGUF headers are checked before transformers sees the file (:func:`check_gguf`): the
metadata's ``embedding_length``, ``block_count`` and vocabulary size against the tensors'
real shapes, and the memory of the dequantized float32 weights against the available memory.
A lying file is refused in one line, in milliseconds, instead of transformers trying to
build (and allocate) the model the metadata describes.

The load report (``output_loading_info``) says which weights the checkpoint lacked and
transformers initialised at random: a causal-LM head among them (BERT-style encoders have
no trained one) refuses ``lm_head=True``, since the "next tokens" it would give are noise.

Quiet: transformers' logging, its own progress bars and the tqdm bar of its GGUF
de-quantisation (``transformers.modeling_gguf_pytorch_utils.tqdm``, which no logging switch
reaches) are silenced while loading.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch

from actstore.config import Settings
from actstore.errors import InvalidInput

__all__ = ["GGUFHeader", "LoadedModel", "check_gguf", "gguf_quantization", "hub_gguf", "hub_reachable",
           "invalid", "is_bidirectional", "load_model", "resolve_device", "resolve_dtype"]

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
}


def invalid(message: str, *, field: str | None = None) -> InvalidInput:
    """InvalidInput carrying the name of the argument at fault (``field``: ``device``,
    ``next_tokens``, ``chat_template``, ``token``...), so that the command line can name its
    flag; messages here never name flags themselves."""
    err = InvalidInput(message)
    err.field = field  # type: ignore[attr-defined]
    return err


# --------------------------------------------------------------------------- environment


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; otherwise ``torch.device(device)``."""
    if isinstance(device, torch.device):
        return device
    d = (device or "auto").strip().lower()
    if d == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(d)
    except RuntimeError:
        raise invalid(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N", field="device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise invalid(f"device {device!r} requested but CUDA is not available; use device cpu", field="device")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """Compute dtype: explicit, or bf16/fp16 on CUDA and fp32 elsewhere for ``None``/``auto``."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None or str(dtype).lower() == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    try:
        return _DTYPES[str(dtype).lower()]
    except KeyError:
        raise InvalidInput(
            f"unknown compute dtype {dtype!r}: use auto, float32, bfloat16 or float16"
        ) from None


_reachable_cache: dict[str, bool] = {}


def hub_reachable(settings: Settings | None = None, timeout: float = 2.0) -> bool:
    """Whether the Hugging Face Hub endpoint (``settings.hf_endpoint``) accepts a TCP
    connection within ``timeout`` s; ``False`` at once when ``settings.hub_offline``.

    ``settings`` defaults to ``Settings()`` (the environment). DNS lookups run in a daemon
    thread so that a dead resolver cannot hang the caller. Answers are cached per endpoint.
    """
    settings = settings if settings is not None else Settings()
    if settings.hub_offline:
        return False
    endpoint = settings.hf_endpoint
    if endpoint in _reachable_cache:
        return _reachable_cache[endpoint]
    url = urlparse(endpoint)
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    result: list[bool] = [False]

    def probe() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                result[0] = True
        except OSError:
            result[0] = False

    t = threading.Thread(target=probe, daemon=True)
    t.start()
    t.join(timeout + 1.0)
    _reachable_cache[endpoint] = result[0]
    return result[0]


def _resolve_source(source: str | Path, settings: Settings) -> tuple[str, bool, bool, str | None]:
    """(what to pass to from_pretrained, is_local, local_files_only, GGUF file name or None).

    A ``.gguf`` file, or a folder without ``config.json`` that holds exactly one ``.gguf``
    file, is loaded from that file (the folder is passed to from_pretrained with
    ``gguf_file=``)."""
    s = str(source).strip()
    if not s:
        raise InvalidInput("empty model name: pass a hub id, a local model folder or a .gguf file")
    p = Path(s).expanduser()
    if p.exists():
        if not p.is_dir():
            if p.suffix.lower() != ".gguf":
                raise InvalidInput(f"model path {s!r} is a file but not a .gguf file; pass a .gguf file "
                                   "or a model folder (with config.json and *.safetensors)")
            p = p.resolve()
            return str(p.parent), True, True, p.name
        if not (p / "config.json").exists():
            ggufs = sorted(f.name for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".gguf")
            if len(ggufs) == 1:
                return str(p.resolve()), True, True, ggufs[0]
            if ggufs:
                raise InvalidInput(f"model folder {s!r} has no config.json and {len(ggufs)} .gguf files "
                                   f"({', '.join(ggufs)}); pass one of the .gguf files")
            raise InvalidInput(f"model folder {s!r} has no config.json and no .gguf file; pass a folder "
                               "with config.json, *.safetensors and tokenizer files (e.g. downloaded "
                               "with `huggingface-cli download`) or a .gguf file")
        return str(p.resolve()), True, True, None
    if hub_gguf(s) is not None:
        raise InvalidInput(f"{s!r} names a GGUF file of a hub repository; it is fetched by load_model")
    looks_like_path = (s.startswith((".", "/", "~")) or s.endswith("/") or s.count("/") > 1
                       or os.sep in s and os.sep != "/" or s.startswith("\\"))
    if looks_like_path:
        raise InvalidInput(f"model folder {s!r} does not exist")
    offline = not hub_reachable(settings)
    return s, False, offline, None


def hub_gguf(source: str | Path) -> tuple[str, str] | None:
    """(repo id, file path in the repo) when ``source`` names a GGUF file of a hub repository as
    ``OWNER/REPO/FILE.gguf`` (``OWNER/REPO/sub/FILE.gguf`` for a file in a folder) and is not a
    local path; else None."""
    s = str(source).strip()
    parts = s.split("/")
    if (not s.lower().endswith(".gguf") or s.startswith((".", "/", "~", "\\")) or len(parts) < 3
            or any(not p for p in parts) or Path(s).expanduser().exists()):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def _fetch_hub_gguf(repo: str, filename: str, revision: str | None, settings: Settings) -> Path:
    """The local path of a hub GGUF file: from the Hugging Face cache, downloaded first when the
    hub is reachable (``huggingface_hub.hf_hub_download``, which keeps it in the cache)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = not hub_reachable(settings)
    try:
        return Path(hf_hub_download(repo, filename, revision=revision, local_files_only=offline,
                                    endpoint=None if offline else settings.hf_endpoint))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if settings.hub_offline else "the Hugging Face Hub cannot be reached"
        raise InvalidInput(f"GGUF file {filename!r} of hub repository {repo!r} is not in the local Hugging Face "
                           f"cache and {why}; download it where there is a network (`huggingface-cli download "
                           f"{repo} {filename}`) or pass the local .gguf file") from None
    except RepositoryNotFoundError:
        raise InvalidInput(f"hub repository {repo!r} does not exist (or is private)") from None
    except EntryNotFoundError:
        raise InvalidInput(f"hub repository {repo!r} has no file {filename!r}") from None


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers while loading: its logging (load reports), the progress bars its
    logging module switches, and the tqdm bar of its GGUF de-quantisation, which it creates
    with ``tqdm.auto.tqdm`` directly (no switch reaches it; transformers 5.25,
    ``modeling_gguf_pytorch_utils.load_gguf_checkpoint``): that module's ``tqdm`` is replaced by
    a disabled one for the duration. Not reentrant across threads that load at once."""
    import importlib
    import importlib.util

    from transformers.utils import logging as tlog

    level = tlog.get_verbosity()
    bars = tlog.is_progress_bar_enabled()
    tlog.set_verbosity_error()
    tlog.disable_progress_bar()
    gguf_utils = None
    if "gguf" in sys.modules or importlib.util.find_spec("gguf") is not None:
        with contextlib.suppress(ImportError):
            gguf_utils = importlib.import_module("transformers.modeling_gguf_pytorch_utils")
    saved = getattr(gguf_utils, "tqdm", None)
    if saved is not None:
        gguf_utils.tqdm = functools.partial(saved, disable=True)
    try:
        yield
    finally:
        if saved is not None:
            gguf_utils.tqdm = saved
        tlog.set_verbosity(level)
        if bars:
            tlog.enable_progress_bar()


def _offline_error(source: str, settings: Settings) -> InvalidInput:
    why = "HF_HUB_OFFLINE is set" if settings.hub_offline else "the Hugging Face Hub cannot be reached"
    return InvalidInput(
        f"model {source!r} is not a local folder and {why}, and it is not in the local "
        "Hugging Face cache; pass a local folder instead (one with config.json, *.safetensors "
        "and tokenizer files, e.g. downloaded with `huggingface-cli download`) or a .gguf file"
    )


def _require_gguf_packages(source: str) -> None:
    """InvalidInput naming the missing packages when ``gguf`` or ``accelerate`` is absent."""
    import importlib.util

    missing = [m for m in ("gguf", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:
        raise InvalidInput(f"loading the GGUF file {source!r} needs the packages {' and '.join(missing)}: "
                           f"pip install {' '.join(missing)}")


def _causal_lm_class(config: Any, source: str) -> Any:
    """AutoModelForCausalLM when the config has a causal-LM head, else a clear error."""
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise invalid(
            f"model {source!r} ({config.model_type}) has no causal language-model head, so it has no "
            "next tokens to store; ingest it without next tokens", field="next_tokens")
    return AutoModelForCausalLM



def _dtype_kwarg() -> str:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


# --------------------------------------------------------------------------- GGUF header


@dataclass(frozen=True)
class GGUFHeader:
    """What the header of a GGUF file says, checked against its tensors (see :func:`check_gguf`).

    ``name``: ``general.name`` (None when absent); ``quantization``: the weight format
    (``Q4_1``, ``Q8_0``, ``F16``...); ``d_model`` / ``n_layers`` / ``vocab``: from the tensors;
    ``n_params``: elements of all tensors; ``float32_bytes``: their size dequantized to float32.
    """

    name: str | None
    architecture: str
    quantization: str
    d_model: int
    n_layers: int
    vocab: int
    n_params: int

    @property
    def float32_bytes(self) -> int:
        return 4 * self.n_params


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    if f is None or not f.data:
        return None
    try:
        return f.contents()
    except (AttributeError, ValueError, IndexError):
        return None


def _gib(n: float) -> str:
    """A byte count in GiB, MiB or KiB (one decimal)."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n / 2**10:.1f} KiB"


def available_memory() -> int:
    """Bytes of memory available to a new allocation (psutil's ``available``)."""
    import psutil

    return int(psutil.virtual_memory().available)


def check_gguf(path: str | Path) -> GGUFHeader:
    """Read the header of a GGUF file (memory-mapped: nothing large is read) and refuse one
    whose metadata contradicts its tensors, or whose dequantized float32 weights would not fit
    in the available memory. InvalidInput names the file, the metadata value and the tensor's
    real shape (or the estimate and the memory available)."""
    from collections import Counter

    from gguf import GGUFReader, LlamaFileType

    p = str(path)
    try:
        reader = GGUFReader(p)
    except (OSError, ValueError, KeyError) as e:
        raise InvalidInput(f"cannot read the GGUF file {p!r}: {e}") from None
    arch = _field(reader, "general.architecture") or "unknown"
    tensors = {t.name: t for t in reader.tensors}
    emb = tensors.get("token_embd.weight")
    if emb is None:
        raise InvalidInput(f"GGUF file {p!r} has no token_embd.weight tensor, so it is not a language model "
                           "transformers can load")
    # GGML order: shape[0] is the embedding width, shape[1] the vocabulary
    d_model, vocab = int(emb.shape[0]), int(emb.shape[1]) if len(emb.shape) > 1 else 0
    blocks = {int(n.split(".")[1]) for n in tensors if n.startswith("blk.") and n.split(".")[1].isdigit()}
    n_layers = max(blocks) + 1 if blocks else 0
    claims = [("embedding_length", _field(reader, f"{arch}.embedding_length"), d_model,
               f"its tensor token_embd.weight is {d_model} wide"),
              ("block_count", _field(reader, f"{arch}.block_count"), n_layers,
               f"it holds tensors of {n_layers} blocks (blk.0..blk.{n_layers - 1})"),
              ("vocab_size", _field(reader, f"{arch}.vocab_size"), vocab,
               f"its tensor token_embd.weight has {vocab} rows")]
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is not None:
        claims.append(("tokenizer.ggml.tokens", len(tokens.data), vocab,
                       f"its tensor token_embd.weight has {vocab} rows"))
    n_params = int(sum(int(t.n_elements) for t in reader.tensors))
    for what, said, real, why in claims:
        if said is not None and int(said) != real:
            name = what if "." in what else f"{arch}.{what}"
            count = " entries" if what == "tokenizer.ggml.tokens" else ""
            raise InvalidInput(
                f"GGUF file {p!r} is inconsistent: its metadata says {name} = {int(said)}{count} but {why}; "
                f"the file is damaged or was written wrongly (its tensors hold {n_params:,} parameters, "
                f"{_gib(4 * n_params)} as float32)")
    code = _field(reader, "general.file_type")
    quant = None
    if code is not None:
        try:
            quant = LlamaFileType(int(code)).name.removeprefix("MOSTLY_")
        except ValueError:
            quant = None
    if quant is None:
        counts = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) == 2)
        quant = counts.most_common(1)[0][0] if counts else "unknown"
    header = GGUFHeader(_field(reader, "general.name"), str(arch), quant, d_model, n_layers, vocab, n_params)
    free = available_memory()
    if header.float32_bytes > free:
        raise InvalidInput(
            f"GGUF file {p!r} ({n_params:,} parameters) needs about {_gib(header.float32_bytes)} once "
            f"dequantized to float32, but only {_gib(free)} of memory is available")
    return header


def gguf_quantization(path: str | Path) -> str:
    """The weight format of a GGUF file, e.g. ``Q4_1``, ``Q8_0``, ``F16``.

    Read from the metadata ``general.file_type`` (llama.cpp's ``LlamaFileType``, whose
    ``MOSTLY_`` prefix is dropped); files without it get the most common type of their
    2-D tensors (the matrices, where quantization applies). The header is checked as by
    :func:`check_gguf`.
    """
    return check_gguf(path).quantization


# --------------------------------------------------------------------------- loading


@dataclass
class LoadedModel:
    """A loaded model and what ingest records of it.

    ``source``: a local folder's or GGUF file's resolved path, a hub id, or ``OWNER/REPO/FILE.gguf``
    for a hub GGUF; ``gguf_file``: the local GGUF path (else None); ``quantization``: the GGUF's
    weight format (else None); ``model``: the base model (no LM head) in eval mode on the device;
    ``lm_head``: the trained output embeddings when asked for (else None).
    """

    source: str
    revision: str | None
    gguf_file: str | None
    quantization: str | None
    config: Any
    tokenizer: Any
    model: torch.nn.Module
    lm_head: torch.nn.Module | None


def load_model(source: str | Path, *, device: torch.device, dtype: torch.dtype, revision: str | None = None,
               lm_head: bool = False, settings: Settings | None = None) -> LoadedModel:
    """Resolve ``source`` and load its config, tokenizer and model (see the module docstring).

    InvalidInput for a source that does not exist or cannot be loaded, a lying or too large
    GGUF, an encoder-decoder model, and (``lm_head=True``) a model without a trained LM head.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    settings = settings if settings is not None else Settings()
    hub_file = hub_gguf(source)
    if hub_file is not None:
        path, is_local, local_only, gguf_name = _resolve_source(
            _fetch_hub_gguf(*hub_file, revision, settings), settings)
    else:
        path, is_local, local_only, gguf_name = _resolve_source(source, settings)
    gguf_file = str(Path(path) / gguf_name) if gguf_name else None
    # a hub GGUF is recorded by its hub name (OWNER/REPO/FILE.gguf); its weights by the file's sha256
    name = "/".join(hub_file) if hub_file else gguf_file or (path if is_local else str(source).strip())
    rev = revision if hub_file else None if is_local else revision
    common: dict[str, Any] = dict(trust_remote_code=False, local_files_only=local_only)
    if rev:
        common["revision"] = rev
    quantization = None
    if gguf_name:
        _require_gguf_packages(name)
        quantization = check_gguf(gguf_file).quantization
        common["gguf_file"] = gguf_name
    with quiet_transformers():
        try:
            config = AutoConfig.from_pretrained(path, **common)
        except (OSError, ValueError, RuntimeError) as e:
            if not is_local and local_only:
                raise _offline_error(str(source), settings) from None
            raise InvalidInput(f"cannot load the config of model {str(source)!r}: {e}") from None
        if getattr(config, "is_encoder_decoder", False):
            raise InvalidInput(
                f"model {str(source)!r} ({config.model_type}) is an encoder-decoder model; "
                "only decoder-only and encoder-only models are supported")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path, **common)
        except (OSError, ValueError) as e:
            raise InvalidInput(f"cannot load the tokenizer of model {str(source)!r}: {e}") from None
        kwargs = dict(common, config=config)
        if not gguf_name:
            kwargs["use_safetensors"] = True
        kwargs[_dtype_kwarg()] = dtype
        cls = _causal_lm_class(config, str(source)) if lm_head else AutoModel
        try:
            model, report = cls.from_pretrained(path, output_loading_info=True, **kwargs)
        except (OSError, ValueError, EnvironmentError) as e:
            msg = str(e)
            if "safetensors" in msg.lower() or "no file named" in msg.lower():
                raise InvalidInput(
                    f"model {str(source)!r} has no safetensors weights; actstore only loads "
                    f"*.safetensors (convert the checkpoint first): {msg}") from None
            raise InvalidInput(f"cannot load model {str(source)!r}: {msg}") from None
    head = None
    if lm_head:
        _check_trained_head(model, report, str(source))
        model = model.to(device).eval()
        head = model.get_output_embeddings()
        model = model.base_model
    return LoadedModel(name, rev, gguf_file, quantization, config, tokenizer, model.to(device).eval(), head)


def _check_trained_head(model: torch.nn.Module, report: dict[str, Any], source: str) -> None:
    """Refuse a causal LM whose head weights the checkpoint lacked (transformers initialised
    them at random, so its next tokens would be noise); tied heads are not reported missing."""
    prefix = getattr(model, "base_model_prefix", "") or ""
    missing = sorted(k for k in report.get("missing_keys", ()) if not (prefix and k.startswith(prefix + ".")))
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise invalid(
            f"model {source!r} has no trained language-model head: its checkpoint lacks {shown}, which "
            "transformers would initialise at random, so the stored next tokens would be noise; "
            "ingest it without next tokens", field="next_tokens")


def is_bidirectional(config: Any) -> bool:
    """Whether the model is a BERT-style encoder (every position attends to the whole prompt,
    and tokenizers end prompts with a separator such as ``[SEP]``): a masked-LM family that is
    not configured as a decoder."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return (getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES
            and not getattr(config, "is_decoder", False))
