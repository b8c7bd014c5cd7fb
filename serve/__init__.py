"""The OpenAI-compatible service in front of a router (``ttsopt serve``).

``create_app(router, settings)`` builds the FastAPI app (endpoints and fields: serve/app.py's
docstring; budget fields: serve/schemas.py); ``ServeSettings`` holds every bound and knob. FastAPI
is imported only when the app is built, so importing this package stays cheap.
"""

from .settings import API_KEY_ENV, ServeSettings

_APP_NAMES = ("create_app", "serve_in_background", "run_server")


def __getattr__(name: str):
    if name in _APP_NAMES:
        from . import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["API_KEY_ENV", "ServeSettings", *_APP_NAMES]
