"""The ASGI entry point: `uvicorn rag_api.main:app` or gunicorn with `uvicorn_worker.UvicornWorker`."""

from rag_api.app import create_app

app = create_app()
