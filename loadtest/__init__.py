"""Locust scenarios, analysis and reports for the cache-sharing and chaos proofs (see loadtest/run.py)."""
