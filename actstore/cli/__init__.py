"""The ``actstore`` command line (typer). Every command takes ``--store URI``."""

from .app import app, main

__all__ = ["app", "main"]
