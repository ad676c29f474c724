"""The stack's runtimes (Docker Compose, local supervisord) behind `deploy/stack.py` and the make targets."""
