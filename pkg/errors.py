"""The one error taxonomy of Narwhal's core.

Modelled on containerd's ``errdefs``: the core raises these kinds (or
subclasses), each front end maps them exactly once — ``cri/errors.py`` to gRPC
codes, ``dockerapi/errors.py`` to HTTP statuses.  Anything else that escapes
to a front end is a bug and is logged loudly as Internal.
"""
from __future__ import annotations


class NarwhalError(Exception):
    """Base of every expected error raised by the core."""

    kind = "internal"

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.kind.replace("_", " "))

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.kind


class NotFound(NarwhalError):
    kind = "not_found"


class AlreadyExists(NarwhalError):
    kind = "already_exists"


class InvalidArgument(NarwhalError):
    kind = "invalid_argument"


class FailedPrecondition(NarwhalError):
    """The object is in the wrong state for the request (e.g. removing a running container)."""

    kind = "failed_precondition"


class Conflict(NarwhalError):
    """Concurrent change, or a name/reference already in use by something else."""

    kind = "conflict"


class Unavailable(NarwhalError):
    """A dependency (containerd, a registry, a plugin) cannot be reached right now."""

    kind = "unavailable"


class DeadlineExceeded(NarwhalError):
    kind = "deadline_exceeded"


class PermissionDenied(NarwhalError):
    kind = "permission_denied"


class Unauthenticated(NarwhalError):
    kind = "unauthenticated"


class NotImplementedYet(NarwhalError):
    """The feature is not built (yet), or not possible on this host."""

    kind = "not_implemented"


class ResourceExhausted(NarwhalError):
    kind = "resource_exhausted"


class Cancelled(NarwhalError):
    kind = "cancelled"


class Internal(NarwhalError):
    kind = "internal"
