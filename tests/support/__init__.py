"""Helpers the tests share: real processes on free 127.0.0.1 ports, and waiting on conditions."""
