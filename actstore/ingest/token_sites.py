"""Token sites (poolings) of a stored vector, see METHODS.md "Activations".

``last``: the last non-padding token (the default, and what the seeds use); ``first``: the
first token (``[CLS]`` for BERT-style encoders); ``mean``: the mean over the non-padding tokens.
"""

from __future__ import annotations

from actstore.errors import InvalidInput

__all__ = ["TOKEN_SITES", "check_token_site"]

TOKEN_SITES = ("last", "first", "mean")


def check_token_site(token: str) -> str:
    """``token`` when it is one of :data:`TOKEN_SITES`, else InvalidInput."""
    if token not in TOKEN_SITES:
        raise InvalidInput(f"token must be one of {', '.join(TOKEN_SITES)}, got {token!r}")
    return token
