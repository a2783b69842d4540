"""Error types. `MckdInputError` is a user error: one clear line naming the problem and a fix."""


class MckdError(Exception):
    """Base class for mckd errors."""


class MckdInputError(MckdError, ValueError):
    """Bad input data or configuration. Permanent: never retried."""


class TeacherTransportError(MckdError, ConnectionError):
    """The teacher endpoint could not be reached or answered 5xx / timed out. Transient."""
