"""pkg dataclasses -> CRI protobufs.  The only module that builds CRI messages from pkg models."""
from __future__ import annotations

from cri_api.v1 import api_pb2

from pkg.health import Condition


def runtime_condition(cond: Condition) -> api_pb2.RuntimeCondition:
    return api_pb2.RuntimeCondition(type=cond.type, status=cond.status, reason=cond.reason, message=cond.message)
