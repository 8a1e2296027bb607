"""Stackube: multi-tenant Kubernetes with tenancy, networks and volumes from OpenStack."""

__version__ = "0.1.0"
