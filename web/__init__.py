"""HTTP plumbing shared by ttsopt's two servers, with no ttsopt imports.

The policy server (``ttsopt.search.engines.policy_server``) and the router service
(``ttsopt.serve``) answer errors in one shape and bound request bodies the same way; this
package holds what they share, so neither imports the other:

* :mod:`.errors` -- the OpenAI error shape (``{"error": {"message", "type", "code"}}``),
  FastAPI handlers that answer HTTP and validation errors in it (a validation error is a 400
  naming each field), and the generic 500 with a request id (the details go to the log);
* :mod:`.body` -- :class:`BodyLimit`, ASGI middleware that refuses a body over a byte limit (413)
  before anything parses it, declared or chunked;
* :mod:`.background` -- :func:`start_background`: any ASGI app under uvicorn in a daemon thread
  (tests, notebooks, benchmarks).

Arrows: this package imports nothing of ttsopt (only FastAPI/Starlette/uvicorn, inside
functions), so any layer may use it. Importing it is cheap: FastAPI loads when a function runs.
"""

from .background import BackgroundServer, start_background
from .body import BodyLimit
from .errors import ERROR_KINDS, error_response, install_error_handlers, internal_error_response, validation_message

__all__ = ["BackgroundServer", "start_background", "BodyLimit", "ERROR_KINDS", "error_response",
           "install_error_handlers", "internal_error_response", "validation_message"]
