"""Prefect task wrappers: one module per DAG node. They add caching, retries, logging and artifacts only."""
