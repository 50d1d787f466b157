"""Running the app under uvicorn, with a graceful drain: on SIGTERM (or Ctrl-C) the server stops accepting
connections and new requests, lets running requests finish for up to `drain_timeout` seconds, ends the
rest with a clear error, then exits."""

from __future__ import annotations

import asyncio
import logging
import time

import uvicorn

from sambay.serve.app import build_app
from sambay.serve.errors import APIError
from sambay.serve.served_model import ServedModel

logger = logging.getLogger("sambay.serve")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, served: ServedModel):
        super().__init__(config)
        self.served = served

    async def shutdown(self, sockets=None) -> None:
        for server in self.servers:  # no new connections
            server.close()
        await drain(self.served, self.served.options.drain_timeout)
        await super().shutdown(sockets)


async def drain(served: ServedModel, timeout: float) -> None:
    """Refuse new requests; wait up to `timeout` s for the running ones; fail what is left with a 503."""
    served.draining = True
    deadline = time.monotonic() + timeout
    if served.active:
        logger.info("draining %d request(s) (up to %.0f s)", len(served.active), timeout)
    while served.active and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if served.active:
        logger.warning("ending %d unfinished request(s): drain timeout", len(served.active))
        for generation in list(served.active):
            generation.fail(APIError(503, f"the server shut down before this request finished (it waited "
                                     f"{timeout:g} s for running requests)"))
        while served.active and time.monotonic() < deadline + 5:
            await asyncio.sleep(0.05)


def serve(served: ServedModel, host: str, port: int, log_level: str = "info") -> None:
    config = uvicorn.Config(build_app(served), host=host, port=port, log_level=log_level, access_log=False,
                            timeout_graceful_shutdown=5, lifespan="off")
    DrainingServer(config, served).run()
