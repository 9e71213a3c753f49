"""What every ``actstore`` command shares: the ``--store`` option, opening the store or the
service, the error boundary (``error: ...`` and exit status 2) and JSON output.

Nothing heavy is imported here: commands import the store, service, ingest or plots inside
their functions, so ``actstore --help`` starts at once.
"""

# No `from __future__ import annotations`: typer reads the Annotated hints at runtime.

import dataclasses
import errno
import json
import math
import os
import re
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperCommand

from actstore.config import DEFAULT_STORE, Settings
from actstore.errors import ActstoreError, InvalidInput

__all__ = [
    "App",
    "StoreOption",
    "camel_case",
    "check_output_file",
    "check_port_free",
    "check_store_path",
    "column_spec",
    "fail",
    "fraction",
    "int_list",
    "jsonable",
    "open_service",
    "open_store",
    "print_json",
    "result_json",
    "settings_for",
    "user_errors",
]

StoreOption = Annotated[
    Optional[str],
    typer.Option(
        "--store",
        show_default=False,
        help=f"Store URI: a local folder or an object-store URI (default: $ACTSTORE_STORE, else {DEFAULT_STORE}).",
    ),
]


class _FlagsAsTyped(TyperCommand):
    """A command whose help shows flags as they are typed: ``--offline``, not ``--offline <bool>``
    (typer's rich help gives on/off flags a value type, and ``--offline true`` is then refused)."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)
        for p in params:
            if getattr(p, "is_flag", False) and p.metavar is None:
                p.metavar = ""
        return params


class App(typer.Typer):
    """``typer.Typer`` whose commands show flags as they are typed (see :class:`_FlagsAsTyped`)."""

    def command(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("cls", _FlagsAsTyped)
        return super().command(*args, **kwargs)


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` to stderr and return the Exit to raise (status ``code``)."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    return typer.Exit(code)


# ------------------------------------------------------------------------ the error boundary


def camel_case(name: str) -> str:
    """``bridge_dataset`` or ``bridge-dataset`` -> ``bridgeDataset`` (GraphQL's spelling)."""
    first, *rest = re.split(r"[_-]", name)
    return first + "".join(w[:1].upper() + w[1:] for w in rest)


def _with_flag_names(exc: ActstoreError, ctx: Optional[typer.Context]) -> str:
    """Errors below the command line name arguments by their Python names (``bridge_dataset``);
    here they are flags (``--bridge-dataset``). Rewrites the argument at fault and the command's
    own multi-word flags (a one-word name such as ``dataset`` is also plain English)."""
    if ctx is None:
        return str(exc)
    flags = {
        opt[2:].replace("-", "_"): opt for param in ctx.command.params for opt in param.opts if opt.startswith("--")
    }
    names = [n for n in flags if "_" in n]
    return exc.worded(lambda n: flags.get(n, n), names)


def _os_message(exc: OSError) -> str:
    what = exc.strerror or str(exc)
    return f"{exc.filename}: {what}" if exc.filename else what


@contextmanager
def user_errors(ctx: Optional[typer.Context] = None) -> Iterator[None]:
    """Turn expected failures into one line ``error: ...`` and exit status 2: every
    :class:`ActstoreError` (argument names rewritten to the command's flags, see
    :func:`_with_flag_names`), and an OSError from a path the user gave (named in the line)."""
    try:
        yield
    except ActstoreError as exc:
        raise fail(_with_flag_names(exc, ctx)) from None
    except OSError as exc:
        raise fail(_os_message(exc)) from None


# ------------------------------------------------------------------------ stores and services


def settings_for(store: Optional[str]) -> Settings:
    """The settings of this process (the environment), with ``--store`` when given."""
    settings = Settings()
    return settings.replace(store_uri=store) if store else settings


def check_store_path(uri: str, *, create: bool) -> None:
    """Refuse, with a clear message, a local store URI that names a file, or (to create it)
    sits below a file, or cannot be read. Object-store URIs are left to the store."""
    if "://" in uri:
        return
    path = Path(uri).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InvalidInput(f"--store {uri!r} is a file, not a store folder")
        if not os.access(path, os.R_OK | os.X_OK):
            raise InvalidInput(f"--store {uri!r}: permission denied (the folder cannot be read)")
        return
    if create:
        parent = path.absolute().parent
        while not parent.exists():
            parent = parent.parent
        if not parent.is_dir():
            raise InvalidInput(f"--store {uri!r}: {str(parent)!r} is a file, not a folder")


def open_store(settings: Settings, *, create: bool = False) -> Any:
    """The store at ``settings.store_uri``. A missing store is refused (NotFound) unless
    ``create``: only commands that write new data (ingest, import, demo) create stores."""
    from actstore.store import Store

    check_store_path(settings.store_uri, create=create)
    return Store.open(settings.store_uri, create=create, settings=settings)


def open_service(settings: Settings) -> Any:
    """A Service over the existing store at ``settings.store_uri`` (never creates one)."""
    store = open_store(settings)  # first: a missing store is refused before the service loads
    from actstore.service import Service

    return Service(store, settings)


# ------------------------------------------------------------------------ flag values


def column_spec(name: str) -> "str | int":
    """A column name, or a 0-based index when all digits (files without a header row)."""
    return int(name) if name.strip().isdigit() else name


def fraction(value: float, flag: str) -> float:
    """``value`` if strictly between 0 and 1, else InvalidInput naming ``flag``."""
    if not 0.0 < value < 1.0:
        raise InvalidInput(f"{flag} must be strictly between 0 and 1, got {value}")
    return value


def int_list(text: Optional[str], flag: str, minimum: Optional[int] = None) -> Optional[list[int]]:
    """``"1,4,8"`` -> [1, 4, 8] (None for None); InvalidInput naming ``flag`` otherwise."""
    if text is None:
        return None
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InvalidInput(f"{flag} must be comma-separated integers, got {text!r}") from None
    if not values:
        raise InvalidInput(f"{flag} must list at least one integer, got {text!r}")
    if minimum is not None and min(values) < minimum:
        raise InvalidInput(f"{flag} must be integers >= {minimum}, got {text!r}")
    return values


def check_output_file(path: Path, flag: str) -> Path:
    """``path`` if a file can be written there: not a folder, in a folder that exists."""
    if path.is_dir():
        raise InvalidInput(f"{flag} {str(path)!r} is a folder; give a file name (e.g. {path / 'plot.png'})")
    parent = path.absolute().parent
    if not parent.is_dir():
        what = "is a file, not a folder" if parent.exists() else "does not exist"
        raise InvalidInput(f"{flag} {str(path)!r}: folder {str(parent)!r} {what}")
    return path


def check_port_free(host: str, port: int) -> None:
    """Refuse (InvalidInput naming ``--port``) a port that cannot be bound on ``host``: one in
    use, one the user may not bind, or a host that does not resolve. Checked before anything
    is printed or built, so a busy port is one ``error:`` line, not uvicorn's log and exit 3."""
    if not 0 < port < 65536:
        raise InvalidInput(f"--port must be between 1 and 65535, got {port}")
    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise InvalidInput(f"--host {host!r} does not resolve: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(addr)
        except OSError as exc:
            why = (
                "is already in use (another server?)"
                if exc.errno == errno.EADDRINUSE
                else (f"cannot be bound: {exc.strerror}")
            )
            raise InvalidInput(
                f"--port {port}: {host}:{port} {why}; choose another with --port N (make demo PORT=N)"
            ) from None


# ------------------------------------------------------------------------ JSON output


def jsonable(value: Any) -> Any:
    """A result as JSON-ready data with the API's field names: dataclasses and dicts get
    camelCase keys (``n_train`` -> ``nTrain``), tuples become lists, NaN/inf become null."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {camel_case(str(k)): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return jsonable(value.tolist())
    return value


def result_json(result: Any) -> dict[str, Any]:
    """A result dataclass as JSON-ready data (see :func:`jsonable`): every field but the
    internal cache ``key``, i.e. the fields of the API's type for it (derived from the same
    dataclass), and with the same camelCase names; a measure's ``options`` (JSON text in the
    result) as the object the API's JSON scalar gives."""
    data = jsonable(result)
    data.pop("key", None)
    if isinstance(getattr(result, "options", None), str):  # a measure's options: a JSON object, names kept
        data["options"] = json.loads(result.options)
    return data


def print_json(data: Any) -> None:
    print(json.dumps(jsonable(data), indent=2))
