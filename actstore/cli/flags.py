"""Flags for the fields of errors raised below the command line.

Errors raised in ``actstore/ingest`` name no flags: where a message tells the user what to
change, the error carries the argument in ``field`` (see :mod:`actstore.ingest.field_errors`)
and words it plainly ("ingest it without next tokens"). :func:`flag_words` rewrites those
words into the commands' flags ("ingest it without --next-tokens").
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from actstore.errors import ActstoreError

__all__ = ["FLAG_WORDS", "flag_words"]

FLAG_WORDS: dict[str, list[tuple[str, str]]] = {
    "next_tokens": [("without next tokens", "without --next-tokens")],
    "chat_template": [("without the chat template", "without --chat-template")],
    "device": [("use device cpu", "use --device cpu")],
    "prompts": [("pass a prompts file to add", "pass a prompts file (--prompts FILE) to add")],
    "key": [
        ("choose another key", "choose another --key"),
        ("ingest it under another key", "ingest it under another key with --key NAME"),
    ],
    "dtype": [("with storage dtype", "with --dtype")],
    "text_column": [("name the text column", "name the text column with --text-column")],
}


@contextmanager
def flag_words() -> Iterator[None]:
    """Re-raise an ActstoreError whose ``field`` has flag words with its message rewritten
    (same class); others pass through unchanged. Use inside ``user_errors``."""
    try:
        yield
    except ActstoreError as exc:
        message = str(exc)
        for words, flagged in FLAG_WORDS.get(getattr(exc, "field", None) or "", []):
            message = message.replace(words, flagged)
        if message != str(exc):
            raise type(exc)(message) from None
        raise
