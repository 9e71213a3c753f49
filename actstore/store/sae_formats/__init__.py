"""Readers for the SAE layouts as they are released, one module per layout, tried in order
(like SAELens' loader registry). Each exposes ``FORMAT`` (:class:`~.common.SaeFormat`: the
files that identify it and its reader); every reader returns the same normalised cfg and
tensors in SAELens orientation (see :mod:`.common`), which the registry stores and encodes.

Layouts: SAELens, EleutherAI sparsify, Gemma Scope, Gemma Scope 2, Llama Scope,
dictionary_learning; plus SAELens registry entries (:mod:`.saelens_registry`, needs sae-lens).
"""

from __future__ import annotations

from pathlib import Path

from . import dictionary_learning, gemma_scope, gemma_scope_2, llama_scope, saelens, sparsify
from .common import SUPPORTED, SaeFormat

__all__ = ["FORMATS", "SUPPORTED", "SaeFormat", "detect"]

FORMATS: tuple[SaeFormat, ...] = (
    saelens.FORMAT,
    sparsify.FORMAT,
    gemma_scope_2.FORMAT,
    llama_scope.FORMAT,
    dictionary_learning.FORMAT,
    gemma_scope.FORMAT,
)


def detect(folder: Path) -> SaeFormat | None:
    """The first layout whose identifying files are all in ``folder``, else None."""
    for fmt in FORMATS:
        if fmt.matches(folder):
            return fmt
    return None
