"""Errors as OpenAI shapes them: `{"error": {"message", "type", "param", "code"}}` with the HTTP status.

Bad input is always a 4xx that says what is wrong; 500 is kept for faults of the server itself.
"""

from __future__ import annotations

from http import HTTPStatus

from fastapi.responses import JSONResponse
from pydantic import ValidationError

# OpenAI's error types per status (what its clients map to exception classes)
_TYPES = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 405: "BadRequestError",
          413: "BadRequestError", 415: "BadRequestError", 429: "RateLimitError", 500: "InternalServerError",
          503: "ServiceUnavailableError"}


class APIError(Exception):
    """An error answer: raise it anywhere in a handler."""

    def __init__(self, status: int, message: str, param: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.headers = status, message, param, headers

    def body(self) -> dict:
        return error_body(self.status, self.message, self.param)

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


def error_body(status: int, message: str, param: str | None = None) -> dict:
    return {"error": {"message": message, "type": _TYPES.get(status, HTTPStatus(status).phrase.replace(" ", "")),
                      "param": param, "code": status}}


def from_validation(e: ValidationError) -> APIError:
    """The first problem pydantic found, as a 400 naming the field (`messages.0.role`)."""
    first = e.errors(include_url=False)[0]
    # union members add their type to the location (`prompt.str`); keep only the request's own names
    loc = [str(p) for p in first["loc"] if isinstance(p, int) or not _is_type_name(str(p))]
    param = ".".join(loc) or None
    msg = first["msg"].removeprefix("Value error, ")
    more = len(e.errors()) - 1
    return APIError(400, f"{param}: {msg}" + (f" (and {more} more problems)" if more else "") if param else msg,
                    param)


def _is_type_name(part: str) -> bool:
    return part in {"str", "int", "float", "bool", "list", "dict"} or part.startswith(("list[", "dict[", "constrained-"))
