"""Socket servers that misbehave as no well-behaved HTTP server can: for SessionM and Braze
failures (a connection closed without a word, headers trickled a byte at a time), and a
proxy that loses or delays what Redis and its client say to each other."""

from __future__ import annotations

import contextlib
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


class StallingProxy:
    """A TCP proxy to a server (Redis) that can lose or delay what one connection says.

    `lose_next_answer()`: the next connection the server answers gets nothing back from
    then on, although the server did what was asked (a reply lost on the way).
    `delay_next_request(seconds)`: the next connection that sends something has it held
    that long, and only then passed on, with whatever follows it (a command stuck in a
    network, arriving after the client gave up); `delayed_answered` is set once the server
    has answered it (to nobody, by then)."""

    def __init__(self, port: int):
        self.target = ("127.0.0.1", port)
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.sock.getsockname()[1]}/0"
        self._lock = threading.Lock()
        self._lose = False
        self._delay = 0.0
        self.delayed_answered = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def lose_next_answer(self) -> None:
        with self._lock:
            self._lose = True

    def delay_next_request(self, seconds: float) -> None:
        with self._lock:
            self._delay = seconds

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            delayed = threading.Event()
            threading.Thread(
                target=self._requests, args=(client, server, delayed), daemon=True
            ).start()
            threading.Thread(
                target=self._answers, args=(server, client, delayed), daemon=True
            ).start()

    def _requests(
        self, client: socket.socket, server: socket.socket, delayed: threading.Event
    ) -> None:
        try:
            while data := client.recv(65536):
                with self._lock:
                    held, self._delay = self._delay, 0.0
                if held:
                    time.sleep(held)  # the client may give up meanwhile: this still arrives
                    delayed.set()
                server.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                server.shutdown(socket.SHUT_WR)

    def _answers(
        self, server: socket.socket, client: socket.socket, delayed: threading.Event
    ) -> None:
        muted = False
        try:
            while data := server.recv(65536):
                if delayed.is_set():
                    self.delayed_answered.set()
                with self._lock:
                    if self._lose:
                        muted, self._lose = True, False
                if not muted:
                    client.sendall(data)
        except OSError:
            pass
        finally:
            for end in (client, server):
                with contextlib.suppress(OSError):
                    end.close()

    def close(self) -> None:
        self.sock.close()


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
