"""An OpenAI-compatible HTTP server over `sambay.Engine` (`sambay serve`): FastAPI + uvicorn.

    from sambay.serve import ServedModel, ServeOptions, build_app, serve
    served = ServedModel(sambay.Engine(model, tokenizer), tokenizer, ServeOptions(served_model_name="m"))
    serve(served, "127.0.0.1", 8000)          # or run build_app(served) under any ASGI server

Needs the `serve` extra: pip install "sambay[serve]".
"""

from sambay.serve.app import build_app
from sambay.serve.defaults import generation_defaults
from sambay.serve.served_model import ServedModel, ServeOptions
from sambay.serve.server import serve

__all__ = ["ServeOptions", "ServedModel", "build_app", "generation_defaults", "serve"]
