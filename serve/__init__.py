"""The OpenAI-compatible service in front of a router (``ttsopt serve``).

``load_served(path)`` loads every pair of a router as its own model (serve/routers.py);
``create_app(served, settings)`` builds the FastAPI app (endpoints and fields: serve/app.py's
docstring; budget fields: serve/schemas.py); ``ServeSettings`` holds every bound and knob. FastAPI
is imported only when the app is built, so importing this package stays cheap.
"""

from .routers import ServedRouters, load_served
from .settings import API_KEY_ENV, ServeSettings

_APP_NAMES = ("create_app", "serve_in_background", "run_server")


def __getattr__(name: str):
    if name in _APP_NAMES:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["API_KEY_ENV", "ServeSettings", "ServedRouters", "load_served", *_APP_NAMES]
