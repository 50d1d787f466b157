"""The FastAPI application: OpenAI's routes over one `ServedModel`, plus /health, /metrics, /tokenize,
/detokenize and /version (vLLM's). Every error, bad input or not, is answered in OpenAI's error shape."""

from __future__ import annotations

import hmac
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from sambay.serve.body import read_body
from sambay.serve.chat import create_chat_completion
from sambay.serve.completions import create_completion
from sambay.serve.errors import APIError, error_body
from sambay.serve.protocol import ChatCompletionRequest, CompletionRequest, DetokenizeRequest, TokenizeRequest
from sambay.serve.served_model import ServedModel

logger = logging.getLogger("sambay.serve")


def build_app(served: ServedModel) -> FastAPI:
    app = FastAPI(title="sambay", version=served.version, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.served = served
    limit = served.options.max_request_bytes

    @app.middleware("http")
    async def authenticate(request: Request, call_next):
        key = served.options.api_key
        if key is not None and request.url.path.startswith("/v1"):
            given = request.headers.get("authorization", "")
            if not hmac.compare_digest(given.encode(), f"Bearer {key}".encode()):
                return APIError(401, "Unauthorized: a valid API key is needed (Authorization: Bearer KEY)").response()
        return await call_next(request)

    @app.exception_handler(APIError)
    async def api_error(_: Request, e: APIError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, e: RequestValidationError):
        return JSONResponse(error_body(400, str(e.errors()[0].get("msg", e))), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, e: StarletteHTTPException):
        return JSONResponse(error_body(e.status_code, str(e.detail)), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, e: Exception):  # a fault of the server: logged, and a 500
        logger.exception("error while handling %s %s", request.method, request.url.path)
        return JSONResponse(error_body(500, f"internal server error: {type(e).__name__}"), status_code=500)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [served.model_card()]}

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await create_completion(served, request, await read_body(request, CompletionRequest, limit))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await create_chat_completion(served, request, await read_body(request, ChatCompletionRequest, limit))

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = await read_body(request, TokenizeRequest, limit)
        served.check_model(body.model)
        if body.messages is not None:
            chat = ChatCompletionRequest(messages=body.messages, add_generation_prompt=body.add_generation_prompt)
            ids = await served.chat_prompt(chat)
        else:
            ids = await served.encode(body.prompt, body.add_special_tokens)
        return {"count": len(ids), "max_model_len": served.max_model_len, "tokens": ids}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = await read_body(request, DetokenizeRequest, limit)
        served.check_model(body.model)
        served.check_ids(body.tokens, "tokens")
        if served.tokenizer is None:
            raise APIError(400, "this model was served without a tokenizer")
        return {"prompt": served.decode(body.tokens)}

    @app.get("/health")
    async def health():
        if served.engine.dead is not None:
            return JSONResponse(error_body(503, f"the engine has stopped after an error: {served.engine.dead}"),
                                status_code=503)
        return Response(status_code=200)

    @app.get("/metrics")
    async def metrics():
        return Response(generate_latest(served.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/version")
    async def version():
        return {"version": served.version}

    return app
