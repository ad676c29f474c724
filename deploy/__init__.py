"""The stack's runtimes (Docker Compose, local supervisord) behind `python -m deploy.stack` and the make targets."""
