"""Every error kind of the core maps to a gRPC code and an HTTP status, exactly once each."""
import grpc

from cri.errors import CODES, code_for
from dockerapi.errors import STATUSES, status_for
from pkg import errors


def _kinds() -> list[type[errors.NarwhalError]]:
    return [k for k in vars(errors).values()
            if isinstance(k, type) and issubclass(k, errors.NarwhalError) and k is not errors.NarwhalError]


def test_every_kind_is_mapped() -> None:
    for kind in _kinds():
        assert kind in CODES, kind
        assert kind in STATUSES, kind


def test_examples() -> None:
    assert code_for(errors.NotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert code_for(errors.FailedPrecondition("x")) == grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(errors.NotFound("x")) == 404
    assert status_for(errors.Conflict("x")) == 409
    assert status_for(errors.InvalidArgument("x")) == 400


def test_subclass_inherits_mapping() -> None:
    class ImageNotFound(errors.NotFound):
        pass

    assert code_for(ImageNotFound("x")) == grpc.StatusCode.NOT_FOUND
    assert status_for(ImageNotFound("x")) == 404
