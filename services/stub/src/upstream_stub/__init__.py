"""An OpenAI-compatible upstream stand-in: deterministic embeddings and chat answers, with call counters."""

from upstream_stub.app import create_app
from upstream_stub.vectors import embedding_bytes, embedding_vector

__all__ = ["create_app", "embedding_bytes", "embedding_vector"]
