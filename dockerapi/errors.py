"""The one mapping from the core's error kinds to HTTP statuses (moby httpstatus.FromError)."""
from __future__ import annotations

from pkg import errors

STATUSES: dict[type[errors.NarwhalError], int] = {
    errors.NotFound: 404,
    errors.AlreadyExists: 409,
    errors.Conflict: 409,
    errors.InvalidArgument: 400,
    errors.FailedPrecondition: 409,
    errors.Unavailable: 503,
    errors.DeadlineExceeded: 504,
    errors.PermissionDenied: 403,
    errors.Unauthenticated: 401,
    errors.NotImplementedYet: 501,
    errors.ResourceExhausted: 503,
    errors.Cancelled: 499,
    errors.Internal: 500,
}


def status_for(err: errors.NarwhalError) -> int:
    for kind in type(err).__mro__:
        if kind in STATUSES:
            return STATUSES[kind]
    return 500
