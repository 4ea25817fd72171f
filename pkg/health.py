"""Runtime conditions reported by CRI Status (and by the Docker /info later)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pkg import errors
from pkg.cni import config as cni_config
from pkg.containerd.client import Client

RUNTIME_READY = "RuntimeReady"
NETWORK_READY = "NetworkReady"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


NetworkStatus = Callable[[], Awaitable[Condition]]


def conf_dir_network_status(conf_dir_getter: Callable[[], object]) -> NetworkStatus:
    """NetworkReady from the CNI conf dir: true only when a valid network config loads."""

    async def status() -> Condition:
        conf_dir = conf_dir_getter()
        try:
            net = cni_config.load_default(conf_dir)  # type: ignore[arg-type]
        except errors.NotFound as exc:
            return Condition(NETWORK_READY, False, "NoNetworkConfig", exc.message)
        except errors.InvalidArgument as exc:
            return Condition(NETWORK_READY, False, "InvalidNetworkConfig", exc.message)
        return Condition(NETWORK_READY, True, "", f"default network {net.name!r} from {net.path}")

    return status


class HealthChecker:
    def __init__(self, client: Client, network_status: NetworkStatus) -> None:
        self._client = client
        self._network_status = network_status

    async def runtime_condition(self) -> Condition:
        if await self._client.healthy():
            return Condition(RUNTIME_READY, True)
        return Condition(
            RUNTIME_READY, False, "ContainerdUnhealthy",
            f"containerd at {self._client.address} does not answer its health check",
        )

    async def conditions(self) -> list[Condition]:
        return [await self.runtime_condition(), await self._network_status()]
