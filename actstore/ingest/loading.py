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

GGUF headers are checked before transformers sees the file
(:func:`actstore.ingest.gguf_header.check_gguf`): the metadata's ``embedding_length``, ``block_count`` and vocabulary size against the tensors'
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
from actstore.ingest.gguf_header import GGUFHeader, check_gguf, gguf_quantization

__all__ = [
    "GGUFHeader",
    "LoadedModel",
    "check_gguf",
    "gguf_quantization",
    "hub_gguf",
    "hub_reachable",
    "is_bidirectional",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]

log = logging.getLogger(__name__)

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
}


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
        raise InvalidInput(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N", field="device") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device {device!r} requested but CUDA is not available; use device cpu", field="device")
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
        raise InvalidInput(f"unknown compute dtype {dtype!r}: use auto, float32, bfloat16 or float16") from None


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
                raise InvalidInput(
                    f"model path {s!r} is a file but not a .gguf file; pass a .gguf file "
                    "or a model folder (with config.json and *.safetensors)"
                )
            p = p.resolve()
            return str(p.parent), True, True, p.name
        if not (p / "config.json").exists():
            ggufs = sorted(f.name for f in p.iterdir() if f.is_file() and f.suffix.lower() == ".gguf")
            if len(ggufs) == 1:
                return str(p.resolve()), True, True, ggufs[0]
            if ggufs:
                raise InvalidInput(
                    f"model folder {s!r} has no config.json and {len(ggufs)} .gguf files "
                    f"({', '.join(ggufs)}); pass one of the .gguf files"
                )
            raise InvalidInput(
                f"model folder {s!r} has no config.json and no .gguf file; pass a folder "
                "with config.json, *.safetensors and tokenizer files (e.g. downloaded "
                "with `huggingface-cli download`) or a .gguf file"
            )
        return str(p.resolve()), True, True, None
    if hub_gguf(s) is not None:
        raise InvalidInput(f"{s!r} names a GGUF file of a hub repository; it is fetched by load_model")
    looks_like_path = (
        s.startswith((".", "/", "~"))
        or s.endswith("/")
        or s.count("/") > 1
        or os.sep in s
        and os.sep != "/"
        or s.startswith("\\")
    )
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
    if (
        not s.lower().endswith(".gguf")
        or s.startswith((".", "/", "~", "\\"))
        or len(parts) < 3
        or any(not p for p in parts)
        or Path(s).expanduser().exists()
    ):
        return None
    return "/".join(parts[:2]), "/".join(parts[2:])


def _fetch_hub_gguf(repo: str, filename: str, revision: str | None, settings: Settings) -> Path:
    """The local path of a hub GGUF file: from the Hugging Face cache, downloaded first when the
    hub is reachable (``huggingface_hub.hf_hub_download``, which keeps it in the cache)."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = not hub_reachable(settings)
    try:
        return Path(
            hf_hub_download(
                repo,
                filename,
                revision=revision,
                local_files_only=offline,
                endpoint=None if offline else settings.hf_endpoint,
            )
        )
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if settings.hub_offline else "the Hugging Face Hub cannot be reached"
        raise InvalidInput(
            f"GGUF file {filename!r} of hub repository {repo!r} is not in the local Hugging Face "
            f"cache and {why}; download it where there is a network (`huggingface-cli download "
            f"{repo} {filename}`) or pass the local .gguf file"
        ) from None
    except RepositoryNotFoundError:
        raise InvalidInput(f"hub repository {repo!r} does not exist (or is private)") from None
    except EntryNotFoundError:
        raise InvalidInput(f"hub repository {repo!r} has no file {filename!r}") from None


_bar_lock = threading.Lock()
_bar_users = 0  # loads in progress that silenced the GGUF bar
_bar_saved: Any = None  # transformers' own tqdm, put back when the last of them ends


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers while loading: its logging (load reports), the progress bars its
    logging module switches, and the tqdm bar of its GGUF de-quantisation, which it creates
    with ``tqdm.auto.tqdm`` directly (no switch reaches it; transformers 5.25,
    ``modeling_gguf_pytorch_utils.load_gguf_checkpoint``): that module's ``tqdm`` is replaced by
    a disabled one while any load runs (counted, so that concurrent loads put back the original)."""
    global _bar_users, _bar_saved
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
    if gguf_utils is not None and hasattr(gguf_utils, "tqdm"):
        with _bar_lock:
            if _bar_users == 0:
                _bar_saved = gguf_utils.tqdm
                gguf_utils.tqdm = functools.partial(_bar_saved, disable=True)
            _bar_users += 1
    try:
        yield
    finally:
        if gguf_utils is not None and hasattr(gguf_utils, "tqdm"):
            with _bar_lock:
                _bar_users -= 1
                if _bar_users == 0:
                    gguf_utils.tqdm = _bar_saved
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
        raise InvalidInput(
            f"loading the GGUF file {source!r} needs the packages {' and '.join(missing)}: "
            f"pip install {' '.join(missing)}"
        )


def _causal_lm_class(config: Any, source: str) -> Any:
    """AutoModelForCausalLM when the config has a causal-LM head, else a clear error."""
    from transformers import AutoModelForCausalLM
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise InvalidInput(
            f"model {source!r} ({config.model_type}) has no causal language-model head, so it has no "
            "next tokens to store; ingest it without next tokens",
            field="next_tokens",
        )
    return AutoModelForCausalLM


def _dtype_kwarg() -> str:
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return "dtype" if (major, minor) >= (4, 56) else "torch_dtype"


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


def load_model(
    source: str | Path,
    *,
    device: torch.device,
    dtype: torch.dtype,
    revision: str | None = None,
    lm_head: bool = False,
    settings: Settings | None = None,
) -> LoadedModel:
    """Resolve ``source`` and load its config, tokenizer and model (see the module docstring).

    InvalidInput for a source that does not exist or cannot be loaded, a lying or too large
    GGUF, an encoder-decoder model, and (``lm_head=True``) a model without a trained LM head.
    """
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    settings = settings if settings is not None else Settings()
    hub_file = hub_gguf(source)
    if hub_file is not None:
        path, is_local, local_only, gguf_name = _resolve_source(
            _fetch_hub_gguf(*hub_file, revision, settings), settings
        )
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
                "only decoder-only and encoder-only models are supported"
            )
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
        except (OSError, ValueError) as e:
            msg = str(e)
            if "safetensors" in msg.lower() or "no file named" in msg.lower():
                raise InvalidInput(
                    f"model {str(source)!r} has no safetensors weights; actstore only loads "
                    f"*.safetensors (convert the checkpoint first): {msg}"
                ) from None
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
        raise InvalidInput(
            f"model {source!r} has no trained language-model head: its checkpoint lacks {shown}, which "
            "transformers would initialise at random, so the stored next tokens would be noise; "
            "ingest it without next tokens",
            field="next_tokens",
        )


def is_bidirectional(config: Any) -> bool:
    """Whether the model is a BERT-style encoder (every position attends to the whole prompt,
    and tokenizers end prompts with a separator such as ``[SEP]``): a masked-LM family that is
    not configured as a decoder."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return getattr(config, "model_type", None) in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(
        config, "is_decoder", False
    )
