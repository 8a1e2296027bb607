"""Stackube API objects: types, schemas, CRDs (pure; imports no adapter)."""
