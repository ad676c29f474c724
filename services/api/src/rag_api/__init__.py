"""An OpenAI-compatible RAG API with a tiered, tenant-isolated, replica-coherent cache."""

__version__ = "0.1.0"
