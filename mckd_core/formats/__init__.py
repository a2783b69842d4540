"""Task formats: parse / validate / repair model outputs and score them. Importing this registers the built-ins."""

from .base import Checked, TaskFormat, format_names, get_format, register_format
from . import slots, text  # noqa: F401  (registration side effect)

try:  # the constituency format lives in its own module
    from . import constituency  # noqa: F401
except ImportError:  # pragma: no cover - only while the module is being written
    pass

__all__ = ["Checked", "TaskFormat", "format_names", "get_format", "register_format"]
