"""Device and precision resolution shared by the analysis modules (not re-exported by the package).

``device="auto"`` means CUDA through torch when ``torch.cuda.is_available()``, else CPU.
All heavy linear algebra in this package runs through torch so that CPU and CUDA share one
code path; results agree to float tolerance.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from .errors import AnalysisError

__all__ = ["from_numpy", "resolve_device", "resolve_precision", "to_tensor", "torch_dtype"]

_DEVICES = ("auto", "cpu", "cuda")
_PRECISIONS = ("auto", "float32", "float64")


def resolve_device(device: str) -> torch.device:
    """Map "auto" | "cpu" | "cuda" to a torch device; "cuda" without a GPU is an error."""
    if device not in _DEVICES:
        raise AnalysisError(f"device must be one of {_DEVICES}, got {device!r}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise AnalysisError("device 'cuda' was requested but torch sees no CUDA device; use device='cpu' or 'auto'")
    return torch.device(device)


def resolve_precision(precision: str, *, small: bool) -> np.dtype:
    """Map "auto" | "float32" | "float64" to a numpy dtype.

    "auto" is float64 for small problems (where it costs little and gives the 1e-6 contract
    with margin) and float32 otherwise; see the callers for what "small" means.
    """
    if precision not in _PRECISIONS:
        raise AnalysisError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if precision == "auto":
        return np.dtype(np.float64 if small else np.float32)
    return np.dtype(precision)


def torch_dtype(dtype: np.dtype) -> torch.dtype:
    return torch.float64 if np.dtype(dtype) == np.float64 else torch.float32


def from_numpy(a: np.ndarray) -> torch.Tensor:
    """``torch.from_numpy`` that accepts read-only arrays without a warning.

    Callers share cached, read-only layers; nothing in this package writes to its inputs
    (tests check it), so torch's warning about non-writable arrays carries no information.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(np.ascontiguousarray(a))


def to_tensor(a: np.ndarray, dtype: np.dtype, device: torch.device) -> torch.Tensor:
    """A torch tensor of ``a`` in ``dtype`` on ``device`` (shares memory when it can)."""
    t = from_numpy(a)
    return t.to(device=device, dtype=torch_dtype(dtype))
