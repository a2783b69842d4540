"""mckd_core: the pure-Python core of mckd (no Prefect imports here, by design)."""

__version__ = "0.1.0"
