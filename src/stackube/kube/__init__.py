"""Thin adapters over the official Kubernetes client: the only place that imports it."""
