"""gunicorn settings for wallet-proxy, shipped inside the package.

`wallet-proxy serve` uses them; to run gunicorn yourself:
`gunicorn -c python:wallet_proxy.gunicorn_config 'wallet_proxy:create_app()'`.
Every value can be overridden by an environment variable (named beside it, read with
the service's other settings in wallet_proxy/config.py) or on the command line; see
docs/benchmarks.md for the measurements behind the worker model.
"""

import glob
import os
import shutil
import sys
import tempfile

from wallet_proxy.config import ConfigError, Settings, serving_settings

# WALLET_PROXY_BIND, WEB_CONCURRENCY, WALLET_PROXY_THREADS and WALLET_PROXY_LOG_LEVEL, with
# their defaults (config.py); a malformed one reads as its default here, and on_starting
# stops the master naming it.
_serving = serving_settings(os.environ)

# Where to listen. Braze only calls ports 80/443: put a TLS-terminating load
# balancer or ingress in front and bind the service to an internal port.
bind = _serving.bind

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
workers = _serving.workers
threads = _serving.threads

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

# JSON lines for the container runtime or journald to collect (docs/operations.md): one
# per request on stdout, written by the app (wallet_proxy/request_log.py), which replaces
# gunicorn's access log; gunicorn's own lines on stderr in the same format.
accesslog = None
errorlog = "-"
loglevel = _serving.log_level
logger_class = "wallet_proxy.logs.GunicornLogger"

# Metrics: each worker counts in files of its own under PROMETHEUS_MULTIPROC_DIR and a
# scrape of any worker sums them (prometheus_client's multiprocess mode). The folder is
# prepared here, before the first worker starts and imports prometheus_client; without
# the variable, a temporary one for this run. Don't preload the app (preload_app): the
# master would import prometheus_client before the folder is set.
METRICS_DIR = "PROMETHEUS_MULTIPROC_DIR"
_made_metrics_dir: list[str] = []


def pre_request(worker, req):
    """Nothing: gunicorn's default logs each request's path at debug level, and paths hold
    user ids; the app writes its own line per request (wallet_proxy/request_log.py)."""


def on_starting(server):
    """Refuse to start on bad settings with one line, before any worker boots; then the
    metrics folder."""
    try:
        Settings.from_env(os.environ)
    except ConfigError as error:
        print(f"wallet-proxy: configuration error: {error}", file=sys.stderr)
        sys.exit(2)
    prepare_metrics_dir()


def prepare_metrics_dir():
    """An empty metrics folder: a previous run's counts would be added to this one's."""
    path = os.environ.get(METRICS_DIR)
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="wallet-proxy-metrics-")
        _made_metrics_dir.append(path)
        os.environ[METRICS_DIR] = path  # inherited by every worker


def child_exit(server, worker):
    """A worker's counters stay (the totals must not drop); its live gauges go."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    for path in _made_metrics_dir:
        shutil.rmtree(path, ignore_errors=True)


def post_worker_init(worker):
    """Offer each worker as the instance's trigger deliverer and tags worker; a lock each
    lets exactly one do it (wallet_proxy/triggers/running.py, wallet_proxy/tags/running.py),
    and another takes over if it dies."""
    from wallet_proxy.tags.running import start_in_worker as start_tags_worker
    from wallet_proxy.triggers.running import start_in_worker

    start_in_worker(worker.wsgi)
    start_tags_worker(worker.wsgi)


def worker_exit(server, worker):
    """Close the app: the deliverer finishes its call to Braze, threads stop, pools close."""
    from flask import Flask

    from wallet_proxy.factory import close_app

    if isinstance(worker.wsgi, Flask):
        close_app(worker.wsgi)
