"""Thin adapters over openstacksdk: the only place that imports it."""
