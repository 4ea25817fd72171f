"""The multi-node test bed itself (test/lib/cluster.py): three narwhald nodes, each in its own network
namespace with its own address, reach each other over the bed's bridge and not through the host's
loopback; a single-node swarm inits on a namespaced address; teardown leaves nothing."""
from __future__ import annotations

import sys

import pytest
from lib.cluster import nodes

pytestmark = pytest.mark.cluster

FETCH = """
import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode()[:2000])
except OSError as exc:
    print("ERR", exc)
"""


def test_three_nodes_in_their_namespaces() -> None:
    with nodes(3) as bed:
        addresses = {n.address for n in bed.nodes}
        assert len(addresses) == 3
        for node in bed.nodes:
            shown = node.run_in("ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout
            assert f"{node.address}/24" in shown
            other = bed.nodes[(node.index + 1) % 3]
            # the other node's metrics endpoint, over the bridge (each namespace has its own loopback)
            port = other.daemon.metrics_port
            assert "narwhal" in node.run_in(sys.executable, "-c", FETCH, f"http://{other.address}:{port}/metrics").stdout
            assert "ERR" in node.run_in(sys.executable, "-c", FETCH, f"http://127.0.0.1:{port}/metrics").stdout
            assert node.out("info", "--format", "{{.Swarm.LocalNodeState}}") == "inactive"
            # its own containerd and root: a container on one node is not on the others
        bed.nodes[0].out("run", "--name", "probe", "busybox", "true")
        assert bed.nodes[0].out("ps", "-aq", "--filter", "name=probe")
        assert not bed.nodes[1].out("ps", "-aq", "--filter", "name=probe")
        bed.nodes[0].out("rm", "probe")
        first = bed.nodes[0]
        first.out("swarm", "init", "--advertise-addr", first.address)
        assert first.info()["NodeAddr"] == first.address
