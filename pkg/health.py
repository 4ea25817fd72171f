"""Runtime conditions reported by CRI Status (and by the Docker /info later)."""
from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pkg.containerd.client import Client

RUNTIME_READY = "RuntimeReady"
NETWORK_READY = "NetworkReady"


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str = ""
    message: str = ""


NetworkStatus = Callable[[], Awaitable[Condition]]  # pkg.cni.manager.NetworkManager.status


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
