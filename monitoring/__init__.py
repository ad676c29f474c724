"""Monitoring: the Grafana dashboard, Prometheus configuration and alert rules (see README, Monitoring)."""
