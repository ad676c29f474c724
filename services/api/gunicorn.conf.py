"""gunicorn settings for the API: `gunicorn -c services/api/gunicorn.conf.py rag_api.main:app`.

Every value can be overridden from the environment (names below) or the command line.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

_host = os.environ.get("API_HOST", "0.0.0.0")
_port = os.environ.get("API_PORT", os.environ.get("PORT", "8001"))

bind = os.environ.get("GUNICORN_BIND", f"{_host}:{_port}")
workers = int(os.environ.get("WEB_CONCURRENCY", "1"))
worker_class = "uvicorn_worker.UvicornWorker"
# No preload: the app (and every client it builds in its lifespan) is created in each worker after the fork.
preload_app = False
# Longer than nginx's upstream keepalive_timeout (60 s), so nginx, not gunicorn, closes idle connections
# and never reuses one that gunicorn has just closed (which would surface as a 502).
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "75"))
# Time for in-flight requests to finish after SIGTERM, before workers are killed.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
# A worker silent this long is restarted; above UPSTREAM_TIMEOUT's default (30 s) with room to spare.
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
loglevel = os.environ.get("LOG_LEVEL", "info")
accesslog = os.environ.get("GUNICORN_ACCESS_LOG") or None
errorlog = "-"
# gunicorn >= 25.1 opens a control socket (for `gunicornc`) under $XDG_RUNTIME_DIR or $HOME/.gunicorn. The image
# user has no home (every replica logged "Control server error: Permission denied"), and local replicas
# would share one path; nothing here uses gunicornc. Older gunicorn ignores an unknown setting in this file.
control_socket_disable = True

# prometheus-client's multiprocess mode needs a directory shared by the workers, known before they import it.
if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="rag-api-prometheus-")


def on_starting(server: Any) -> None:
    """Start from an empty metrics directory: files of a previous run would be summed into this one's."""
    path = os.environ["PROMETHEUS_MULTIPROC_DIR"]
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges from the multiprocess figures."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
