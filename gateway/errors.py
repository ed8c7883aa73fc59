"""The gateway's own errors: an HTTP status, a stable code (the i18n key) and its parameters."""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    status = 500
    code = "internal_error"
    openai_type = "server_error"

    def __init__(
        self,
        code: str | None = None,
        *,
        status: int | None = None,
        headers: Mapping[str, str] | None = None,
        param: str | None = None,
        **params: object,
    ) -> None:
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = dict(headers or {})
        self.param = param
        self.params = params
        super().__init__(self.code)


class BadRequest(GatewayError):
    status = 400
    code = "bad_json"
    openai_type = "invalid_request_error"


class Unauthorized(GatewayError):
    status = 401
    code = "unauthorized"
    openai_type = "invalid_request_error"


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"
    openai_type = "invalid_request_error"


class NotFound(GatewayError):
    status = 404
    code = "not_found"
    openai_type = "invalid_request_error"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "method_not_allowed"
    openai_type = "invalid_request_error"


class RequestTimeout(GatewayError):
    """The body did not arrive in time; the connection is closed after the answer."""

    status = 408
    code = "body_timeout"
    openai_type = "invalid_request_error"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "body_too_large"
    openai_type = "invalid_request_error"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "unsupported_media_type"
    openai_type = "invalid_request_error"


class RateLimited(GatewayError):
    status = 429
    code = "too_many_requests"
    openai_type = "rate_limit_exceeded"


class UpstreamRejected(GatewayError):
    """The upstream answered with an error status, mapped to the one our client should see."""

    openai_type = "upstream_error"


class UpstreamTimeout(GatewayError):
    status = 504
    code = "upstream_timeout"
    openai_type = "upstream_error"


class UpstreamUnavailable(GatewayError):
    status = 502
    code = "upstream_unavailable"
    openai_type = "upstream_error"


class ShuttingDown(GatewayError):
    status = 503
    code = "shutting_down"
    openai_type = "server_error"


class LimiterUnavailable(GatewayError):
    status = 503
    code = "limiter_unavailable"
    openai_type = "server_error"
