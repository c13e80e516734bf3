"""Socket servers that misbehave as no well-behaved HTTP server can: for SessionM and Braze
failures (a connection closed without a word, headers trickled a byte at a time)."""

from __future__ import annotations

import socket
import ssl
import threading
import time


class RawServer:
    """A socket server that reads one request at a time and answers with `reply(conn)`:
    for SessionM failures that a well-behaved HTTP server can't produce."""

    def __init__(self, reply, tls: ssl.SSLContext | None = None):
        self.reply = reply
        self.tls = tls
        self.requests = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            with conn:
                conn.recv(65536)
                self.requests += 1
                self.reply(conn)

    def close(self):
        self.sock.close()


class TrickledHeaders:
    """A reply that sends a status line, then one header byte a second, until the client
    hangs up: each socket read gets a byte in time, so no read timeout ever trips."""

    def __init__(self, interval: float = 1.0):
        self.interval = interval
        self.hung_up = threading.Event()

    def __call__(self, conn):
        try:
            conn.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while True:
                time.sleep(self.interval)
                conn.sendall(b"x")
        except OSError:
            self.hung_up.set()


class KeepAliveServer:
    """An HTTP/1.1 server that keeps each connection open for the next request, as SessionM
    and Braze do (the sandbox, Werkzeug's development server, closes every connection).
    `reply(conn, n)` answers the n-th request (1-based); `connections` counts accepts."""

    def __init__(self, reply):
        self.reply = reply
        self.requests = 0
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn, conn.makefile("rb") as stream:
            while True:
                length = 0
                while (line := stream.readline()) not in (b"\r\n", b""):
                    name, _, value = line.decode("latin1").partition(":")
                    if name.strip().lower() == "content-length":
                        length = int(value)
                if line == b"":
                    return  # the client closed the connection
                stream.read(length)
                self.requests += 1
                try:
                    self.reply(conn, self.requests)
                except OSError:
                    return

    def close(self):
        self.sock.close()
