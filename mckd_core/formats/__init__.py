"""Task formats: parse / validate / repair model outputs and score them. Importing this registers the built-ins."""

from . import constituency, slots, text  # noqa: F401  (registration side effect)
from .base import Checked, TaskFormat, format_names, get_format, register_format

__all__ = ["Checked", "TaskFormat", "format_names", "get_format", "register_format"]
