"""Swarm bodies decoded as Go does: keys match fields case-insensitively, user maps keep their keys."""
from __future__ import annotations

from dockerapi.gokeys import canonical


def test_struct_keys_take_the_field_spelling() -> None:
    body = {"Name": "web", "Mode": {"replicated": {"replicas": 5}},
            "TaskTemplate": {"containerSpec": {"image": "busybox", "tty": True, "dnsconfig": {}},
                             "forceupdate": 2}}
    assert canonical(body) == {"Name": "web", "Mode": {"Replicated": {"Replicas": 5}},
                               "TaskTemplate": {"ContainerSpec": {"Image": "busybox", "TTY": True, "DNSConfig": {}},
                                                "ForceUpdate": 2}}


def test_user_maps_are_data() -> None:
    body = {"Labels": {"com.example": "x", "lower": "y"}, "Templating": {"name": "golang", "Options": {"k": "v"}}}
    assert canonical(body) == {"Labels": {"com.example": "x", "lower": "y"},
                               "Templating": {"Name": "golang", "Options": {"k": "v"}}}
    assert canonical([{"secretID": "a", "file": {"uid": "0"}}]) == [{"SecretID": "a", "File": {"UID": "0"}}]
