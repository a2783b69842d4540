"""Prefect flows of mckd. `from flows import mckd_flow; mckd_flow(config)` runs a distillation."""

from .mckd import mckd_flow, stage_flow

__all__ = ["mckd_flow", "stage_flow"]
