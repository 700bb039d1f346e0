"""Errors in Stripe's JSON shape, so stripe-python raises the same exception classes it would against Stripe.

stripe-python picks the class from the status and `error.type`/`error.code`: 400/404 ->
InvalidRequestError (IdempotencyError when type is idempotency_error), 401 -> AuthenticationError,
429 -> RateLimitError, anything else -> APIError. Like Stripe, keys that do not apply are left out.
"""

from __future__ import annotations

from typing import Any

DOCS = "https://stripe.com/docs/error-codes/"


class StripeAPIError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.code = code
        self.param = param
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.type}
        if self.code:
            error["code"] = self.code
            error["doc_url"] = DOCS + self.code.replace("_", "-")
        error["message"] = self.message
        if self.param:
            error["param"] = self.param
        return {"error": error}


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> StripeAPIError:
    return StripeAPIError(400, message, param=param, code=code)


def resource_missing(object_name: str, object_id: str, param: str = "id") -> StripeAPIError:
    return StripeAPIError(404, f"No such {object_name}: '{object_id}'", code="resource_missing", param=param)


def unknown_parameter(name: str) -> StripeAPIError:
    return invalid_request(f"Received unknown parameter: {name}", param=name, code="parameter_unknown")


def unrecognized_url(method: str, path: str) -> StripeAPIError:
    return StripeAPIError(
        404,
        f"Unrecognized request URL ({method}: {path}). Please see https://stripe.com/docs "
        "or we can help at https://support.stripe.com/.",
    )


def authentication(message: str) -> StripeAPIError:
    # Stripe answers a missing or bad key with 401 and type invalid_request_error; the status alone
    # makes stripe-python raise AuthenticationError.
    return StripeAPIError(401, message)
