"""What every SAE layout reader shares: the format record, the path rule for files, JSON and
tensor readers that check memory before allocating, and the normalised result.

Every reader returns ``(cfg, tensors)``:

* ``cfg``: ``architecture`` (SAELens names: "standard" | "jumprelu" | "topk"), ``d_in``,
  ``d_sae``, ``k`` (topk), ``apply_b_dec_to_input``, ``normalize_activations`` (SAELens names),
  ``norm_scaling_factor``, ``hook_name``, ``hook_layer``, ``model_name``, ``layout`` (the
  config flavour), ``format`` (the reader's name), ``notes`` (list of str), ``original`` (the
  layout's own config, JSON-able);
* ``tensors``: torch tensors in SAELens orientation: W_enc [d_in, d_sae], W_dec [d_sae, d_in],
  b_enc [d_sae], b_dec [d_in], and threshold [d_sae] for jumprelu.

:func:`finish` checks shapes and values and applies ``rescale_acts_by_decoder_norm`` (TopK)
by folding it into the weights exactly as SAELens does before saving an inference SAE.
"""

from __future__ import annotations

import json
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from actstore.errors import InvalidInput

__all__ = [
    "ARCHITECTURES",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "SUPPORTED",
    "SaeFormat",
    "available_memory",
    "check_memory",
    "file_in",
    "finish",
    "hook_layer_of",
    "json_depth",
    "load_npz",
    "load_safetensors",
    "load_torch",
    "normalised",
    "not_an_sae",
    "positive_int",
    "read_json",
]

ARCHITECTURES = ("standard", "jumprelu", "topk")

SUPPORTED = (
    "supported: sparse autoencoders with architecture standard (ReLU), jumprelu or topk, in these "
    "layouts: SAELens (cfg.json + sae_weights.safetensors), Gemma Scope (params.npz), Gemma Scope 2 "
    "(config.json + params.safetensors), Llama Scope (hyperparams.json + checkpoints/final.safetensors), "
    "EleutherAI sparsify (cfg.json + sae.safetensors), dictionary_learning (config.json + ae.pt), "
    "or a SAELens registry entry (actstore sae add --release R --sae-id ID, with sae-lens installed)"
)

# A reader: (real folder, root or None) -> (cfg, tensors)
Reader = Callable[[Path, "str | Path | None"], "tuple[dict[str, Any], dict[str, Any]]"]


@dataclass(frozen=True)
class SaeFormat:
    """One released layout. ``files``: the relative paths whose presence identifies it (all
    must exist); ``read``: the reader."""

    name: str
    title: str
    files: tuple[str, ...]
    read: Reader

    def matches(self, folder: Path) -> bool:
        return all((folder / f).exists() for f in self.files)


def not_an_sae(what: str) -> InvalidInput:
    """The refusal for transcoders and other dictionaries that are not SAEs of one hook."""
    return InvalidInput(
        f"{what} is not a sparse autoencoder of one activation site and cannot be registered; {SUPPORTED}"
    )


def file_in(folder: Path, name: str, root: str | Path | None, layout: str) -> Path:
    """The real path of ``folder/name``; refused when missing, not a file, or (with ``root``)
    resolving outside the root."""
    f = folder / name
    if not f.exists():
        raise InvalidInput(f"SAE folder {str(folder)!r} has no {name}: a {layout} folder holds it")
    real = f.resolve()
    if root is not None and not real.is_relative_to(Path(root).expanduser().resolve()):
        raise InvalidInput(
            f"{name} in {str(folder)!r} resolves to {str(real)!r}, outside the allowed "
            f"SAE root; symlinks out of ACTSTORE_SAE_ROOT are refused"
        )
    if not real.is_file():
        raise InvalidInput(f"{name} in {str(folder)!r} is not a file")
    return real


# Bounds of a configuration file read from an SAE folder: its size, and how deeply its arrays
# and objects nest (real configs nest 2-3 levels; deeper ones are refused before parsing, so a
# crafted file cannot exhaust the parser's recursion).
MAX_JSON_BYTES = 16 << 20
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')


def json_depth(text: bytes) -> int:
    """How deeply the arrays and objects of the JSON document ``text`` nest (0 for a scalar),
    counted without parsing it (brackets inside strings do not count)."""
    bare = np.frombuffer(_JSON_STRING.sub(b'""', text), np.uint8)
    step = np.zeros(len(bare), np.int64)
    step[(bare == ord("[")) | (bare == ord("{"))] = 1
    step[(bare == ord("]")) | (bare == ord("}"))] = -1
    return int(np.cumsum(step).max(initial=0))


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; InvalidInput when it is larger than
    :data:`MAX_JSON_BYTES`, nests deeper than :data:`MAX_JSON_DEPTH`, is not valid JSON or is
    not an object."""
    where = f"{path.name} in {str(path.parent)!r}"
    size = path.stat().st_size
    if size > MAX_JSON_BYTES:
        raise InvalidInput(f"{where} is {size:,} bytes; configuration files over {MAX_JSON_BYTES:,} bytes are refused")
    data = path.read_bytes()
    depth = json_depth(data)
    if depth > MAX_JSON_DEPTH:
        raise InvalidInput(f"{where} nests {depth:,} levels deep; at most {MAX_JSON_DEPTH} are allowed")
    try:
        raw = json.loads(data.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise InvalidInput(f"{where} is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(raw, dict):
        raise InvalidInput(f"{where} must hold a JSON object")
    return raw


def available_memory() -> int:
    """Bytes of memory this machine can still give (MemAvailable; psutil when installed)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))


def _gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**20 else f"{int(n)} bytes"


def check_memory(sizes: Iterable[tuple[str, tuple[int, ...], int]], where: str) -> None:
    """Refuse, before anything is allocated, tensors that need more memory than is available.

    ``sizes``: (name, shape, bytes per element as stored). Reading takes the stored bytes plus
    a float32 copy for the checks, so the need is numel * (itemsize + 4) summed."""
    sizes = list(sizes)
    need = sum(math.prod(int(d) for d in shape) * (int(item) + 4) for _, shape, item in sizes)
    have = available_memory()
    if need > have:
        shown = ", ".join(f"{n} {list(s)}" for n, s, _ in sizes[:6])
        raise InvalidInput(
            f"{where} declares tensors ({shown}) that need about {_gib(need)} of memory to read, "
            f"but this machine has {_gib(have)} available; refused before reading them"
        )


def load_safetensors(path: Path, where: str) -> dict[str, Any]:
    """All tensors of a safetensors file (torch), after checking the header's sizes against
    the available memory."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            sizes = []
            for key in f.keys():  # noqa: SIM118 - safe_open is not a mapping
                sl = f.get_slice(key)
                item = torch.empty((), dtype=_st_dtype(sl.get_dtype())).element_size()
                sizes.append((key, tuple(sl.get_shape()), item))
            check_memory(sizes, where)
            return {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"{where} cannot be read as safetensors: {exc}") from None


def _st_dtype(name: str) -> Any:
    import torch

    table = {
        "F64": torch.float64,
        "F32": torch.float32,
        "F16": torch.float16,
        "BF16": torch.bfloat16,
        "I64": torch.int64,
        "I32": torch.int32,
        "I16": torch.int16,
        "I8": torch.int8,
        "U8": torch.uint8,
        "BOOL": torch.bool,
    }
    return table.get(name, torch.float32)


def load_npz(path: Path, where: str) -> dict[str, Any]:
    """The arrays of a .npz file as torch tensors (pickles refused), after checking the
    shapes in the member headers against the available memory."""
    import numpy as np
    import torch

    try:
        sizes = []
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                with z.open(name) as fh:
                    version = np.lib.format.read_magic(fh)
                    if version == (1, 0):
                        shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
                    elif version == (2, 0):
                        shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
                    else:  # no public reader for other header versions: count the stored bytes
                        shape, dtype = (z.getinfo(name).file_size,), np.dtype(np.uint8)
                sizes.append((name.removesuffix(".npy"), tuple(shape), np.dtype(dtype).itemsize))
        check_memory(sizes, where)
        with np.load(path, allow_pickle=False) as data:
            return {k: torch.from_numpy(np.ascontiguousarray(data[k])) for k in data.files}
    except InvalidInput:
        raise
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidInput(f"{where} cannot be read as a .npz of arrays: {exc}") from None


def load_torch(path: Path, where: str) -> dict[str, Any]:
    """A state dict saved with torch.save, read with ``torch.load(weights_only=True)`` (never
    unpickling arbitrary objects) and memory-mapped, so sizes are checked before copying."""
    import pickle

    import torch

    try:
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as exc:  # legacy (non-zip) files cannot be memory-mapped
            if "mmap" not in str(exc):
                raise
            check_memory([("file", (path.stat().st_size,), 1)], where)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInput(
            f"{where} cannot be read with torch.load(weights_only=True) ({first}); actstore "
            f"never unpickles arbitrary objects: save a plain state dict of tensors"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("ae"), dict):
        obj = obj["ae"]  # a dictionary_learning training backup: {"step", "ae", "optimizer", ...}
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise InvalidInput(f"{where} must hold a state dict of tensors, got {type(obj).__name__}")
    check_memory([(k, tuple(v.shape), v.element_size()) for k, v in obj.items()], where)
    return {k: v.clone() for k, v in obj.items()}


def hook_layer_of(hook_name: Any) -> int | None:
    """The block index in a TransformerLens hook name (blocks.N.xxx), else None."""
    import re

    if not isinstance(hook_name, str):
        return None
    m = re.search(r"blocks\.(\d+)\.", hook_name)
    return int(m.group(1)) if m else None


def positive_int(v: Any, what: str) -> int:
    """``v`` as a positive int (integral floats allowed); InvalidInput naming ``what``."""
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise InvalidInput(f"{what} must be a positive integer, got {v!r}")
    return v


def normalised(**fields: Any) -> dict[str, Any]:
    """A normalised cfg with SAELens' defaults for what ``fields`` leave out."""
    cfg: dict[str, Any] = {
        "architecture": "standard",
        "k": None,
        "apply_b_dec_to_input": True,
        "normalize_activations": "none",
        "norm_scaling_factor": None,
        "hook_name": None,
        "hook_layer": None,
        "model_name": None,
        "layout": None,
        "format": None,
        "notes": [],
        "rescale_acts_by_decoder_norm": False,
        "original": {},
    }
    cfg.update(fields)
    if cfg["hook_layer"] is None:
        cfg["hook_layer"] = hook_layer_of(cfg["hook_name"])
    return cfg


_SHAPES = {"W_enc": "d_in, d_sae", "W_dec": "d_sae, d_in", "b_enc": "d_sae", "b_dec": "d_in", "threshold": "d_sae"}


def finish(cfg: dict[str, Any], tensors: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check a reader's result and return only the tensors encoding and decoding need.

    Checks: the architecture is supported, k is in 1..d_sae for topk, every needed tensor is
    present with the shape d_in/d_sae give, floating point and finite. TopK with
    ``rescale_acts_by_decoder_norm`` is folded as SAELens' ``process_state_dict_for_saving_inference``
    does (n = row norms of W_dec: W_enc *= n, b_enc *= n, W_dec /= n, in float32), which
    leaves every encoding unchanged and is a no-op when the rows already have unit norm."""
    import torch

    arch = cfg["architecture"]
    if arch not in ARCHITECTURES:
        raise InvalidInput(f"architecture {arch!r} is not supported; {SUPPORTED}")
    d_in, d_sae = cfg["d_in"], cfg["d_sae"]
    if arch == "topk":
        k = cfg.get("k")
        if isinstance(k, float) and k.is_integer():
            k = cfg["k"] = int(k)
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= d_sae:
            raise InvalidInput(f"a topk SAE needs k in 1..d_sae={d_sae}, got {k!r} ({where})")
    need = ["W_enc", "W_dec", "b_enc", "b_dec"] + (["threshold"] if arch == "jumprelu" else [])
    missing = [k for k in need if tensors.get(k) is None]
    if missing:
        raise InvalidInput(f"{where} lacks {', '.join(missing)} (has {', '.join(sorted(tensors)) or 'nothing'})")
    dims = {"d_in": d_in, "d_sae": d_sae}
    for name in need:
        t = tensors[name]
        want = tuple(dims[p.strip()] for p in _SHAPES[name].split(","))
        if tuple(t.shape) != want:
            raise InvalidInput(
                f"{name} has shape {list(t.shape)} but the config says d_in={d_in}, d_sae={d_sae}, "
                f"so it must be {list(want)} [{_SHAPES[name]}] ({where})"
            )
        if not t.is_floating_point() or not bool(t.float().isfinite().all()):
            raise InvalidInput(f"{name} must hold finite floating-point values ({where})")
    out = {k: tensors[k].contiguous() for k in need}
    if arch == "topk" and cfg.get("rescale_acts_by_decoder_norm"):
        n = out["W_dec"].float().norm(dim=-1)
        safe = torch.where(n > 0, n, torch.ones_like(n))  # a zero row's feature is always 0 either way
        out["W_enc"] = (out["W_enc"].float() * n).contiguous()
        out["b_enc"] = (out["b_enc"].float() * n).contiguous()
        out["W_dec"] = (out["W_dec"].float() / safe[:, None]).contiguous()
        cfg["notes"] = list(cfg.get("notes") or []) + [
            "rescale_acts_by_decoder_norm folded into W_enc, b_enc and W_dec (as SAELens does for inference)"
        ]
    return cfg, out
