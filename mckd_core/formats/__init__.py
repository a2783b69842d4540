"""Task formats: parse / validate / repair model outputs and score them. Importing this registers the built-ins."""

from . import constituency, json_format, slots, text  # noqa: F401  (registration side effect)
from .base import (
    Checked,
    TaskFormat,
    available_formats,
    format_names,
    format_ref,
    format_source_hash,
    get_format,
    register_format,
)

__all__ = [
    "Checked",
    "TaskFormat",
    "available_formats",
    "format_names",
    "format_ref",
    "format_source_hash",
    "get_format",
    "register_format",
]
