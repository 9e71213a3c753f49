"""GraphQL API: strawberry schema and the ASGI app served by uvicorn."""

from .app import create_app, execute

__all__ = ["create_app", "execute"]
