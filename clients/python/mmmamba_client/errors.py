"""Errors the client raises.

Every failure the server reports is an APIError carrying the HTTP status and
the OpenAI error object ({"message", "type", "param", "code"}) as the server
sent it; subclasses name the common statuses so callers can catch what they
handle (RateLimitError for 429 with its Retry-After, ...). Failures to reach
the server at all are APIConnectionError; a read that outlives the timeout is
APITimeoutError.
"""


class MmmambaError(Exception):
    """Base class of everything this package raises."""


class APIConnectionError(MmmambaError):
    """The server could not be reached, or the connection broke."""


class APITimeoutError(APIConnectionError):
    """No answer (or no next stream event) within the client's timeout."""


class APIError(MmmambaError):
    """The server answered with an error.

    status: the HTTP status (200 for an error event inside a stream)
    error: the OpenAI error object, a dict (message, type, param, code)
    headers: the response headers (a mapping), when there was a response
    """

    def __init__(self, status, error, headers=None):
        self.status = status
        self.error = error if isinstance(error, dict) else {"message": str(error)}
        self.headers = headers or {}
        self.message = self.error.get("message") or "HTTP %d" % status
        self.type = self.error.get("type")
        self.code = self.error.get("code")
        self.param = self.error.get("param")
        super().__init__("%d %s: %s" % (status, self.type or "error", self.message))


class BadRequestError(APIError):
    """400: the request was malformed or asked for something unsupported."""


class AuthenticationError(APIError):
    """401: a missing or wrong API key."""


class NotFoundError(APIError):
    """404: no such route, model or stored response."""


class PayloadTooLargeError(APIError):
    """413: the body (an image, a prompt) exceeds the server's limit."""


class RateLimitError(APIError):
    """429: the server's queue is full; retry_after is in seconds or None."""

    @property
    def retry_after(self):
        v = self.headers.get("Retry-After")
        try:
            return float(v) if v is not None else None
        except ValueError:
            return None


class InternalServerError(APIError):
    """500: the server failed."""


class ServiceUnavailableError(RateLimitError):
    """503: loading, draining or overloaded; may carry Retry-After."""


class StreamError(APIError):
    """An {"error": ...} event arrived in the middle of a stream."""


_BY_STATUS = {400: BadRequestError, 401: AuthenticationError, 404: NotFoundError,
              413: PayloadTooLargeError, 429: RateLimitError, 500: InternalServerError,
              503: ServiceUnavailableError}


def error_for_status(status, error, headers=None):
    """The APIError subclass instance for an HTTP status."""
    return _BY_STATUS.get(status, APIError)(status, error, headers)
