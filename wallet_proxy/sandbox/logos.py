"""Offer images the sandbox serves itself, so the demo shows logos without the internet.

The seeded offers name them by this sandbox's own URL (`logo_url`), which is how a
real SessionM names its CDN; the demo lists the sandbox's origin in
WALLET_PROXY_IMAGE_HOSTS so the support pages may load them. Each image is a small
PNG drawn here (no binary files in the repository); `logo_requests` in the stats
says how many a browser fetched.
"""

import functools
import struct
import threading
import zlib
from typing import Any

from flask import Flask, Response, abort, request

from .state import Sandbox

SIZE = 80  # pixels; shown at 40 CSS pixels, so sharp on high-density screens
_RGB = tuple[int, int, int]
# name: (background, ring, centre): a cup seen from above, in the offer's colours.
LOGOS: dict[str, tuple[_RGB, _RGB, _RGB]] = {
    "coffee-logo": ((0x6F, 0x4E, 0x37), (0xF3, 0xE3, 0xC8), (0x8B, 0x5A, 0x2B)),
    "coffee-hero": ((0x1A, 0x7F, 0x37), (0xFF, 0xFF, 0xFF), (0x6F, 0x4E, 0x37)),
}


def logo_url(name: str) -> str:
    """The URL of logo `name` on the sandbox answering the current request."""
    return f"{request.host_url}_sandbox/logos/{name}.png"


def _pixel(x: int, y: int, colours: tuple[_RGB, _RGB, _RGB]) -> bytes:
    background, ring, centre = colours
    middle, corner = (SIZE - 1) / 2, SIZE * 0.2
    # Rounded square: outside the corner circles is transparent.
    dx = max(corner - x, x - (SIZE - 1 - corner), 0)
    dy = max(corner - y, y - (SIZE - 1 - corner), 0)
    if dx * dx + dy * dy > corner * corner:
        return b"\x00\x00\x00\x00"
    distance = ((x - middle) ** 2 + (y - middle) ** 2) ** 0.5
    colour = centre if distance < SIZE * 0.18 else ring if distance < SIZE * 0.3 else background
    return bytes(colour) + b"\xff"


@functools.lru_cache(maxsize=len(LOGOS))
def png(name: str) -> bytes:
    """Logo `name` as an RGBA PNG."""
    colours = LOGOS[name]
    rows = b"".join(
        b"\x00" + b"".join(_pixel(x, y, colours) for x in range(SIZE)) for y in range(SIZE)
    )

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", SIZE, SIZE, 8, 6, 0, 0, 0)  # 8-bit RGBA
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows, 9))
        + chunk(b"IEND", b"")
    )


class Logos:
    """The images; its stat is `logo_requests`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.clear()

    def clear(self) -> None:
        self._requests = 0

    def stats(self) -> dict[str, Any]:
        return {"logo_requests": self._requests}

    def register(self, app: Flask, sandbox: Sandbox) -> None:
        @app.get("/_sandbox/logos/<name>.png")
        def logo(name: str) -> Response:
            with self._lock:
                self._requests += 1
            if name not in LOGOS:
                abort(404)
            response = Response(png(name), mimetype="image/png")
            response.cache_control.public = True
            response.cache_control.max_age = 86_400
            return response
