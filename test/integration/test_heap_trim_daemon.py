"""narwhald hands back the heap a big pull freed, once the pull is over (narwhal/heap.py; issue 21: narwhald
stayed at ~100 MiB of RSS after a 100 MiB pull).  test/unit/test_heap_trim.py checks when the trimmer trims and
that trimmed pages leave the RSS; this checks that a real narwhald runs it after a pull."""
from __future__ import annotations

import mkimage
from cri_api.v1 import api_pb2
from lib import images
from lib.daemon import DaemonProcess
from lib.leaks import leftovers
from lib.registry import Registry
from lib.wait import wait_for

TRIMMED = "narwhal.heap: heap trimmed"


def test_a_big_pull_is_trimmed_after_it(daemon: DaemonProcess, registry: Registry) -> None:
    # Two incompressible 12 MiB layers: the pull's buffers (download, decompression, stream-unpack) are freed
    # in narwhald's heap, many times the trimmer's 512 KiB threshold.
    images.push_built(registry.host, "heap/big", "latest", mkimage.build("pause", filler_layers=2, filler_mb=12))
    offset = len(daemon.log())
    daemon.images().PullImage(api_pb2.PullImageRequest(
        image=api_pb2.ImageSpec(image=f"{registry.host}/heap/big:latest")), timeout=120)
    wait_for(lambda: TRIMMED in daemon.log()[offset:], 30, "narwhald's heap trim after the pull")
    assert "background task heap-trim crashed" not in daemon.log()
    assert leftovers(daemon) == {}
