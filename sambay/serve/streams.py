"""Plumbing between the engine's output streams and HTTP: several prompts' streams merged into one, the
client's disconnect watched, and server-sent events written."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Sequence
from typing import TypeVar

from fastapi import Request

from sambay.engine import EngineDeadError, OutputStream, RequestOutput, SamplingParams
from sambay.serve.errors import APIError
from sambay.serve.metrics import RequestTracker
from sambay.serve.served_model import ServedModel

T = TypeVar("T")


class Generation:
    """The engine requests of one API call (one per prompt, each with n completions), merged into one
    stream of (prompt index, output). Requests are added to the engine at construction, so every check of
    the engine raises before a response starts; `close()` aborts whatever has not finished."""

    def __init__(self, served: ServedModel, base_id: str, prompts: Sequence[list[int]],
                 params: Sequence[SamplingParams], priority: int, arrival: float):
        self.streams: list[OutputStream] = []
        self.trackers: dict[tuple[int, int], RequestTracker] = {}
        self.metrics = served.metrics
        self.arrival = arrival
        self.queue: asyncio.Queue = asyncio.Queue()  # (prompt index, output | exception | None when it ends)
        self.active = served.active
        engine = served.engine
        try:
            for i, (ids, p) in enumerate(zip(prompts, params)):
                self.streams.append(engine.add_stream(ids, p, f"{base_id}-{i}", priority))
        except EngineDeadError as e:
            self.close()
            raise APIError(503, str(e)) from None
        except (ValueError, TypeError) as e:
            self.close()
            raise APIError(400, str(e)) from None
        self.active.add(self)

    def fail(self, error: APIError) -> None:
        """End the generation with `error` (the server is shutting down)."""
        self.queue.put_nowait((-1, error))

    async def __aiter__(self) -> AsyncIterator[tuple[int, RequestOutput]]:
        queue = self.queue

        async def pump(i: int, stream: OutputStream) -> None:
            try:
                async for out in stream:
                    queue.put_nowait((i, out))
            except asyncio.CancelledError:
                raise
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
                queue.put_nowait((i, e))
            finally:
                queue.put_nowait((i, None))

        tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(self.streams)]
        try:
            running = len(tasks)
            while running:
                i, item = await queue.get()
                if item is None:
                    running -= 1
                elif isinstance(item, EngineDeadError):
                    raise APIError(503, str(item))
                elif isinstance(item, BaseException):
                    raise item
                else:
                    self._track(i, item)
                    if item.error is not None:  # this request failed inside the engine (the others go on)
                        raise APIError(500, f"the request failed in the engine: {item.error}")
                    yield i, item
        finally:
            for t in tasks:
                t.cancel()
            self.close()

    async def finals(self) -> dict[tuple[int, int], RequestOutput]:
        """Every completion's last output, by (prompt index, completion index)."""
        return {(i, out.index): out async for i, out in self if out.finished}

    def _track(self, i: int, out: RequestOutput) -> None:
        key = (i, out.index)
        tracker = self.trackers.get(key)
        if tracker is None:
            tracker = self.trackers[key] = self.metrics.tracker(self.arrival)
        tracker.observe(out)

    def close(self) -> None:
        """Abort what is unfinished (a client that went away) and count it as aborted."""
        for stream in self.streams:
            if stream.open_completions:
                for _ in range(stream.open_completions):
                    self.metrics.tracker(self.arrival).aborted()
            stream.close()
        self.streams = []
        self.active.discard(self)


async def until_disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T | None:
    """Run `work`; if the client disconnects first, cancel it (which aborts its engine requests) -> None."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(until_disconnected(request))
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
        if not task.done():
            task.cancel()
    if task in done:
        return task.result()
    return None


def sse(data: dict | str) -> str:
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"data: {text}\n\n"


async def sse_stream(events: AsyncIterator[dict]) -> AsyncIterator[str]:
    """Events as server-sent events, ending with [DONE]; an error mid-stream becomes an error event (the
    status line has long been sent)."""
    try:
        async for event in events:
            yield sse(event)
    except APIError as e:
        yield sse(e.body())
    yield sse("[DONE]")
