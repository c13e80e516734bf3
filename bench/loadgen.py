"""A small load generator that records every request: an exact count and each latency.

wrk is faster but can't stop after a fixed list of requests and report only those;
bursts and deadline checks need exactly that. Keep-alive HTTP/1.1 over asyncio
streams, one coroutine per connection, each taking the next path from a shared list.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Outcome:
    path: str
    status: int  # 0 when the connection failed
    seconds: float


async def _connection(host, port, paths, outcomes, headers: bytes, started: list[float]):
    reader = writer = None
    while paths:
        path = paths.pop()
        request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode() + headers + b"\r\n"
        begin = time.perf_counter()
        started.append(begin)
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection(host, port)
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            status = 0
            if writer is not None:
                writer.close()
            reader = writer = None
        outcomes.append(Outcome(path, status, time.perf_counter() - begin))
    if writer is not None:
        writer.close()


async def _run(url, paths, connections, headers):
    parts = urlsplit(url)
    queue = list(reversed(paths))  # pop() from the end keeps the given order
    outcomes: list[Outcome] = []
    started: list[float] = []
    header_bytes = b"".join(f"{k}: {v}\r\n".encode() for k, v in headers.items())
    begin = time.perf_counter()
    await asyncio.gather(
        *(
            _connection(parts.hostname, parts.port, queue, outcomes, header_bytes, started)
            for _ in range(connections)
        )
    )
    return outcomes, time.perf_counter() - begin, (max(started) - min(started)) if started else 0


def run(url: str, paths: list[str], *, connections: int, headers: dict[str, str]):
    """(outcomes, total seconds, seconds over which the requests were sent)."""
    return asyncio.run(_run(url, paths, connections, headers))


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]
