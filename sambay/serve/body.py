"""Reading a request body as JSON, within bounds: size, content type, UTF-8, finite numbers and nesting.

FastAPI's own body parsing would answer some of these with 422 or 500; here each is a 400 (413 for size)
that says what is wrong, and nothing a client sends can make the server read more than `max_bytes`.
"""

from __future__ import annotations

import json
import re
from typing import TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from sambay.serve.errors import APIError, from_validation

Model = TypeVar("Model", bound=BaseModel)
MAX_DEPTH = 64  # nesting of arrays and objects; deeper JSON is not a request body any API here takes


async def read_json(request: Request, max_bytes: int) -> object:
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "application/json":
        raise APIError(400, f"Only 'application/json' is allowed (got content-type {media or 'none'!r})")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise APIError(413, f"the request body is {int(declared)} bytes; this server takes at most {max_bytes}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise APIError(413, f"the request body is over {max_bytes} bytes, the most this server takes")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise APIError(400, f"the request body is not valid UTF-8 (byte {e.start})") from None
    if _depth_over(text, MAX_DEPTH):
        raise APIError(400, f"the JSON body is nested deeper than {MAX_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_no_constant)
    except ValueError as e:
        raise APIError(400, f"the request body is not valid JSON: {e}") from None


async def read_body(request: Request, model: type[Model], max_bytes: int) -> Model:
    data = await read_json(request, max_bytes)
    if not isinstance(data, dict):
        raise APIError(400, f"the request body must be a JSON object, not {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as e:
        raise from_validation(e) from None


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _depth_over(text: str, limit: int) -> bool:
    """Whether brackets nest deeper than `limit` (outside strings): checked before parsing, which would
    otherwise recurse as deep as the client likes."""
    if text.count("[") + text.count("{") <= limit:
        return False
    depth = 0
    for m in _BRACKET.finditer(_STRING.sub("", text)):
        depth += 1 if m.group() in "[{" else -1
        if depth > limit:
            return True
    return False
