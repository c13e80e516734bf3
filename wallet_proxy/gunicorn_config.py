"""gunicorn settings for wallet-proxy, shipped inside the package.

`wallet-proxy serve` uses them; to run gunicorn yourself:
`gunicorn -c python:wallet_proxy.gunicorn_config 'wallet_proxy:create_app()'`.
Every value can be overridden by an environment variable (named beside it) or
on the command line; see docs/benchmarks.md for the measurements behind the
worker model.
"""

import os
import sys

from gunicorn.glogging import Logger

from wallet_proxy.logtext import escape_controls

# Where to listen. Braze only calls ports 80/443: put a TLS-terminating load
# balancer or ingress in front and bind the service to an internal port.
bind = os.environ.get("WALLET_PROXY_BIND", "0.0.0.0:8000")

# gthread: each worker process runs a pool of threads. A request waiting on
# SessionM holds a thread, not a process, so a slow upstream can't starve the
# service the way sync workers do: with SessionM at 200 ms and 64 concurrent
# users, 2 sync workers answered 12/s and 2 gthread workers about 290/s
# (bench/misses.py). Cache hits are CPU-bound, so one process per core.
#
# A waiting thread only sleeps on an Event, so threads are cheap; they must
# outnumber the connections one worker may be handed while SessionM hangs, or
# requests queue behind blocked threads and miss the deadline. With 32
# threads, 64 connections over 2 workers left 2 % of answers at 3 s; with 64,
# every answer was out within 2 s (bench/hang.py). The price: threads contend,
# so cache hits run slower with more of them (on 2 cores, 4,800/s with 8
# threads, 2,900/s with 64; docs/benchmarks.md). Lower WALLET_PROXY_THREADS
# only if nearly all traffic is cache hits.
worker_class = "gthread"
workers = int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 2))
threads = int(os.environ.get("WALLET_PROXY_THREADS", "64"))

# Braze drops answers after 2 s and we answer within WALLET_PROXY_DEADLINE, so a
# worker silent for 30 s is truly stuck. Graceful shutdown lets in-flight
# requests finish when Kubernetes or systemd stops us.
timeout = 30
graceful_timeout = 10
# Keep connections from the load balancer open between requests.
keepalive = 5

# gunicorn's control socket defaults to one path per user ($HOME/.gunicorn/gunicorn.ctl),
# so a second instance on the machine would replace it and stopping either would remove
# the other's. We don't use `gunicornc`; nothing else needs it.
control_socket_disable = True

# Logs to stdout/stderr, for the container runtime or journald to collect.
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("WALLET_PROXY_LOG_LEVEL", "info")
# No query strings (%(U)s is the path only) and no Authorization header in access logs.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms "%(a)s"'


class EscapingLogger(Logger):
    """gunicorn's logger with control characters in a request's parts escaped: a path
    holding %0a would otherwise end the line and write one of its own."""

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        return {
            name: escape_controls(value) if isinstance(value, str) else value
            for name, value in atoms.items()
        }


logger_class = EscapingLogger


def on_starting(server):
    """Refuse to start on bad settings with one line, before any worker boots."""
    from wallet_proxy.config import ConfigError, Settings

    try:
        Settings.from_env(os.environ)
    except ConfigError as error:
        print(f"wallet-proxy: configuration error: {error}", file=sys.stderr)
        sys.exit(2)


def post_worker_init(worker):
    """Offer each worker as the instance's trigger deliverer; a lock lets exactly one
    deliver (wallet_proxy/triggers/running.py), and another takes over if it dies."""
    from wallet_proxy.triggers.running import start_in_worker

    start_in_worker(worker.wsgi)


def worker_exit(server, worker):
    """Let the deliverer finish its call to Braze before the worker goes."""
    from wallet_proxy.triggers.running import stop_in_worker

    stop_in_worker()
