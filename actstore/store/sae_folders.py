"""Reading SAE folders: the path rule, then the layout reader (:mod:`actstore.store.sae_formats`).

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

__all__ = ["CFG_FILE", "WEIGHTS_FILE", "parse_config", "read_folder", "resolve_folder"]


def resolve_folder(path: str | Path, root: str | Path | None) -> Path:
    """The real (symlink-free) folder ``path`` names; with ``root``, relative paths are taken
    from the root and anything resolving outside it is refused."""
    if not isinstance(path, (str, Path)) or not str(path).strip():
        raise InvalidInput(f"path must be a non-empty folder path, got {path!r}")
    raw = Path(str(path)).expanduser()
    if root is None:
        real = raw.resolve()
    else:
        root_real = Path(root).expanduser().resolve()
        if not root_real.is_dir():
            raise InvalidInput(f"the SAE root {str(root)!r} is not an existing folder")
        real = (raw if raw.is_absolute() else root_real / raw).resolve()
        if not real.is_relative_to(root_real):
            raise InvalidInput(
                f"SAE path {str(path)!r} resolves to {str(real)!r}, outside the allowed SAE root "
                f"{str(root_real)!r}; only folders under ACTSTORE_SAE_ROOT can be registered")
    if not real.exists():
        raise NotFound(f"SAE folder {str(path)!r} does not exist")
    if not real.is_dir():
        raise InvalidInput(f"SAE path {str(path)!r} is not a folder: give the folder holding the SAE's "
                           f"files; {SUPPORTED}")
    return real


def read_folder(path: str | Path, root: str | Path | None = None) -> tuple[dict[str, Any], dict[str, Any], Path]:
    """(normalised cfg, tensors {name: torch.Tensor}, real folder) of an SAE folder in any
    supported layout; refuses anything resolving outside ``root`` when one is given."""
    folder = resolve_folder(path, root)
    fmt = detect(folder)
    if fmt is None:
        present = sorted(p.name for p in folder.iterdir())[:12]
        partial = [f"{f.title} needs {' + '.join(f.files)}" for f in FORMATS if any((folder / x).exists() for x in f.files)]
        raise InvalidInput(
            f"SAE folder {str(path)!r} is in no supported layout (it holds: {', '.join(present) or 'nothing'})"
            + (f"; {'; '.join(partial)}" if partial else "") + f"; {SUPPORTED}")
    cfg, tensors = fmt.read(folder, root)
    return cfg, tensors, folder
