"""Errors that map to HTTP answers.

Every failure the server can explain is one of these, so that the HTTP layer,
the local test path and the logs agree on status codes and messages without
string matching.  Anything else raised by the model becomes a ``ModelError``.
"""

from __future__ import annotations


class RuntimeHTTPError(Exception):
    """Base class: an error with an HTTP status and a short, safe message."""

    status: int = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadInput(RuntimeHTTPError):
    """The request is malformed: bad JSON, wrong tensor shape or datatype, a missing field."""

    status = 400


class TooLarge(RuntimeHTTPError):
    """The request is over a size limit (body bytes, JSON values, multipart parts); the
    message names the limit and its variable."""

    status = 413


class UnsupportedType(RuntimeHTTPError):
    """A Content-Type the route does not take."""

    status = 415


class NotFound(RuntimeHTTPError):
    """A route or model name that this server does not serve."""

    status = 404


class Forbidden(RuntimeHTTPError):
    """A route that exists but is switched off (e.g. shutdown without opt-in)."""

    status = 403


class Busy(RuntimeHTTPError):
    """Too many requests in flight; the client should retry later."""

    status = 503


class NotReady(RuntimeHTTPError):
    """The model has not finished loading."""

    status = 503


class Timeout(RuntimeHTTPError):
    """The prediction did not finish within the per-request timeout."""

    status = 504


class ModelError(RuntimeHTTPError):
    """The user's model raised, or its output cannot be encoded.

    ``message`` is the detailed text (it may carry the model's exception text: paths,
    connection strings...), for the log and for ``OCIFORGE_ERROR_DETAILS=1``; ``public`` is
    what a client is told by default. The traceback goes to the log only.
    """

    status = 500
    GENERIC = "the model raised an error"

    def __init__(
        self, message: str, original: BaseException | None = None, public: str | None = None
    ) -> None:
        super().__init__(message)
        self.original = original
        self.public = public if public is not None else message
