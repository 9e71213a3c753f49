"""Command-line commands derived from the service's request types, so each flag is declared once.

``request_command(CkaMatrixRequest, show=...)`` makes a typer command whose parameters are the
request's fields: required fields are arguments (``actstore cka-matrix MODEL_A MODEL_B``), the
others flags spelled as typed (``--by-dataset``, ``--layers-a 0,3,5``, ``--preprocess
standardize``), with the request's defaults and descriptions. Layer references are written
``MODEL:LAYER`` or ``MODEL@DEPTH``; lists comma-separated; a float vector comes from a file
(``.npy``, or numbers separated by commas / whitespace). Every command also takes ``--store``,
``--json`` (the answer as the API's JSON), and ``--plot FILE.png`` for answers with a plot.

Errors name flags (:func:`.common.user_errors` words the request's field names as flags).
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import dataclasses
import enum
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from actstore.errors import ActstoreError, InvalidInput, require_extra
from actstore.layers import LayerRef

from .common import StoreOption, check_output_file, open_service, print_json, result_json, settings_for, user_errors

__all__ = ["flag", "read_vector", "request_command"]


def flag(name: str) -> str:
    """The flag of a Python argument name: ``by_dataset`` -> ``--by-dataset``."""
    return "--" + name.replace("_", "-")


def read_vector(path: str, name: str = "vector") -> list[float]:
    """A vector from a ``.npy`` file or a text file of numbers (commas or whitespace)."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        raise InvalidInput(f"{name} file {path!r} does not exist", field=name, value=path, allowed="a file")
    try:
        arr = np.load(p) if p.suffix == ".npy" else np.array(p.read_text().replace(",", " ").split(), dtype=float)
    except ValueError as exc:
        raise InvalidInput(
            f"{name} file {path!r} is not a list of numbers: {exc}",
            field=name,
            value=path,
            allowed="a .npy file or numbers separated by commas or whitespace",
        ) from None
    return np.asarray(arr, dtype=np.float64).ravel().tolist()


def _strip_optional(hint: Any) -> tuple[Any, bool]:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(a for a in typing.get_args(hint) if a is not type(None)), True
    return hint, False


def _parameter(f: dataclasses.Field, hint: Any) -> tuple[inspect.Parameter, Callable[[Any], Any]]:
    """The typer parameter of one request field and the converter of its command-line value."""
    inner, optional = _strip_optional(hint)
    doc = (f.metadata.get("doc") or "").strip()
    required = f.default is dataclasses.MISSING
    convert: Callable[[Any], Any] = lambda v: v  # noqa: E731
    default = None if required else f.default
    if inner is LayerRef:
        kind: Any = str
        doc = f"{doc} (MODEL:LAYER or MODEL@DEPTH)"
        convert = LayerRef.parse
    elif isinstance(inner, type) and issubclass(inner, enum.Enum):
        kind = str
        doc = f"{doc}: {', '.join(m.value for m in inner)}"
        default = None if default is None else default.value
    elif typing.get_origin(inner) is tuple:
        item = typing.get_args(inner)[0]
        kind = str
        if item is float:
            doc = f"{doc} (a .npy file or a text file of numbers)"
            convert = lambda v: read_vector(v, f.name)  # noqa: E731
        else:
            doc = f"{doc} (comma-separated)"
            convert = lambda v: [item(x) for x in v.split(",") if x.strip()]  # noqa: E731
    else:
        kind = inner
    annotation = Optional[kind] if default is None and not required else kind
    if kind is bool and (not optional or default is not None):  # None standing for a default: still a flag
        info = typer.Option(f"{flag(f.name)}/--no-{f.name.replace('_', '-')}", help=doc)
    elif required:
        info = typer.Argument(..., help=doc, show_default=False)
    else:
        info = typer.Option(flag(f.name), help=doc)
    param = inspect.Parameter(
        f.name,
        inspect.Parameter.KEYWORD_ONLY,
        default=inspect.Parameter.empty if required else default,
        annotation=Annotated[annotation, info],
    )
    return param, (lambda v: None if v is None else convert(v))


def request_command(
    request_type: type, show: Callable[[Any], None], *, before: Callable[[Any, Any], None] | None = None
) -> Callable[..., None]:
    """A typer command answering ``request_type``: ``show(answer)`` prints it (unless ``--json``);
    ``before(service, request)`` runs first (e.g. to say that a model is being loaded)."""
    hints = typing.get_type_hints(request_type)
    params, converters = [], {}
    for f in dataclasses.fields(request_type):
        param, converters[f.name] = _parameter(f, hints[f.name])
        params.append(param)
    K = inspect.Parameter.KEYWORD_ONLY
    extra = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context),
        inspect.Parameter(
            "as_json",
            K,
            default=False,
            annotation=Annotated[
                bool, typer.Option("--json", help="Print the answer as JSON, with the API's field names.")
            ],
        ),
        inspect.Parameter(
            "plot",
            K,
            default=None,
            annotation=Annotated[
                Optional[Path],
                typer.Option("--plot", help="Also draw the answer to this PNG file (matrices and sweeps)."),
            ],
        ),
        inspect.Parameter("store", K, default=None, annotation=StoreOption),
    ]

    def command(ctx: typer.Context, **kwargs: Any) -> None:
        as_json, plot, store = kwargs.pop("as_json"), kwargs.pop("plot"), kwargs.pop("store")
        with user_errors(ctx):
            try:
                if plot is not None:
                    check_output_file(plot, "--plot")
                request = request_type(**{k: converters[k](v) for k, v in kwargs.items()})
                service = open_service(settings_for(store))
                if before is not None:
                    before(service, request)
                answer = service.answer(request)
                if plot is not None:
                    require_extra("server", "--plot")
                    from actstore.plots import render_png

                    plot.write_bytes(render_png(answer))
            except ActstoreError as exc:
                raise exc.reworded(flag, converters) from exc
        if as_json:
            print_json(result_json(answer) if dataclasses.is_dataclass(answer) else [result_json(a) for a in answer])
        else:
            show(answer)
        if plot is not None:
            print(f"plot: {plot}")

    command.__signature__ = inspect.Signature(extra[:1] + params + extra[1:])  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in extra[:1] + params + extra[1:]}
    command.__doc__ = (request_type.__doc__ or "").strip()
    command.__name__ = request_type.op
    return command
