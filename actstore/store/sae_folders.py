"""Reading SAE folders: the path rule, then the layout reader (:mod:`actstore.store.sae_formats`).

Paths are checked before any file-system call: a NUL byte, more than :data:`MAX_PATH_CHARS`
characters or a path the operating system refuses (a name over its limit) is bad input,
named in the message (shortened to :data:`SHOWN_CHARS` characters).

Path rule: with a ``root`` (``ACTSTORE_SAE_ROOT``; required for the API), the folder and each
file read from it must resolve -- symlinks followed -- inside the root, or the call is refused.
The layout is recognised by its files (SAELens, sparsify, Gemma Scope, Gemma Scope 2, Llama
Scope, dictionary_learning); every reader returns the same normalised cfg and tensors.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from actstore.errors import InvalidInput, NotFound

from .sae_formats import FORMATS, SUPPORTED, detect
from .sae_formats.saelens import CFG_FILE, WEIGHTS_FILE, parse_config

__all__ = [
    "CFG_FILE",
    "MAX_PATH_CHARS",
    "SHOWN_CHARS",
    "WEIGHTS_FILE",
    "parse_config",
    "read_folder",
    "resolve_folder",
    "shown_path",
]

# Longest SAE path accepted (Linux's PATH_MAX); longer ones are refused before any file-system call.
MAX_PATH_CHARS = 4096
# Characters of a path quoted in a message.
SHOWN_CHARS = 200


def shown_path(path: object) -> str:
    """``path`` quoted for a message, cut to :data:`SHOWN_CHARS` characters (its length given)."""
    text = str(path)
    if len(text) <= SHOWN_CHARS:
        return repr(text)
    return f"{text[:SHOWN_CHARS]!r}... ({len(text):,} characters)"


def resolve_folder(path: str | Path, root: str | Path | None) -> Path:
    """The real (symlink-free) folder ``path`` names; with ``root``, relative paths are taken
    from the root and anything resolving outside it is refused."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise InvalidInput(f"path must be a non-empty folder path, got {shown_path(path)}")
    text = str(path)
    if "\x00" in text:
        raise InvalidInput(f"SAE path {shown_path(text)} holds a NUL byte: give a folder path without one")
    if len(text) > MAX_PATH_CHARS:
        raise InvalidInput(f"SAE path {shown_path(text)} is longer than {MAX_PATH_CHARS} characters")
    try:
        return _resolve(text, root)
    except OSError as exc:  # e.g. a name over the file system's limit (ENAMETOOLONG), a loop of links
        raise InvalidInput(f"SAE path {shown_path(text)} cannot be used: {exc.strerror or exc}") from None


def _resolve(path: str, root: str | Path | None) -> Path:
    raw = Path(path).expanduser()
    if root is None:
        real = raw.resolve()
    else:
        root_real = Path(root).expanduser().resolve()
        if not root_real.is_dir():
            raise InvalidInput(f"the SAE root {str(root)!r} is not an existing folder")
        real = (raw if raw.is_absolute() else root_real / raw).resolve()
        if not real.is_relative_to(root_real):
            raise InvalidInput(
                f"SAE path {shown_path(path)} resolves to {shown_path(real)}, outside the allowed SAE root "
                f"{str(root_real)!r}; only folders under ACTSTORE_SAE_ROOT can be registered"
            )
    if not real.exists():
        raise NotFound(f"SAE folder {shown_path(path)} does not exist")
    if not real.is_dir():
        raise InvalidInput(
            f"SAE path {shown_path(path)} is not a folder: give the folder holding the SAE's files; {SUPPORTED}"
        )
    return real


def read_folder(path: str | Path, root: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(normalised cfg, tensors {name: torch.Tensor}, real folder) of an SAE folder in any
    supported layout; refuses anything resolving outside ``root`` when one is given."""
    folder = resolve_folder(path, root)
    fmt = detect(folder)
    if fmt is None:
        present = sorted(p.name for p in folder.iterdir())[:12]
        partial = [
            f"{f.title} needs {' + '.join(f.files)}" for f in FORMATS if any((folder / x).exists() for x in f.files)
        ]
        raise InvalidInput(
            f"SAE folder {str(path)!r} is in no supported layout (it holds: {', '.join(present) or 'nothing'})"
            + (f"; {'; '.join(partial)}" if partial else "")
            + f"; {SUPPORTED}"
        )
    cfg, tensors = fmt.read(folder, root)
    return cfg, tensors, folder
