"""A pod's network request as the CNI plugins see it: validation, capability args and CNI_ARGS."""
from __future__ import annotations

import ipaddress
import re
from typing import Any

from pkg import errors
from pkg.cni.model import PodNetworkRequest

MAX_INT32 = 2**31 - 1  # kubelet's burst for bandwidth limits: "no burst limit"
_SANDBOX_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}\Z")
_PROTOCOLS = ("tcp", "udp", "sctp")


def _arg_value(value: str) -> str:
    """CNI_ARGS is ``K=V;K=V``: values cannot carry ';' or '='."""
    return value.replace(";", "").replace("=", "")


def validate(req: PodNetworkRequest) -> None:
    if not _SANDBOX_ID.match(req.sandbox_id):
        raise errors.InvalidArgument(f"invalid sandbox id {req.sandbox_id!r}")
    for pm in req.port_mappings:
        if pm.protocol.lower() not in _PROTOCOLS:
            raise errors.InvalidArgument(f"port mapping protocol {pm.protocol!r}: expected tcp, udp or sctp")
        if not 0 < pm.container_port <= 65535 or not 0 <= pm.host_port <= 65535:
            raise errors.InvalidArgument(f"port mapping {pm.host_port}->{pm.container_port}: ports out of range")
        if pm.host_ip:
            try:
                ipaddress.ip_address(pm.host_ip)
            except ValueError:
                raise errors.InvalidArgument(f"port mapping hostIP {pm.host_ip!r} is not an IP address") from None
    if req.bandwidth_ingress < 0 or req.bandwidth_egress < 0:
        raise errors.InvalidArgument("bandwidth limits must not be negative")
    for att in req.networks:
        for value, kind in ((att.ipv4, ipaddress.IPv4Interface), (att.ipv6, ipaddress.IPv6Interface)):
            if not value:
                continue
            try:
                kind(value)
            except ValueError:
                family = "IPv4" if kind is ipaddress.IPv4Interface else "IPv6"
                raise errors.InvalidArgument(f"invalid {family} address {value!r} for network {att.network}") from None


def runtime_config(req: PodNetworkRequest) -> dict[str, Any]:
    """The capability args (libcni's CapabilityArgs) for this pod."""
    rc: dict[str, Any] = {}
    mappings = [
        {"hostPort": pm.host_port, "containerPort": pm.container_port, "protocol": pm.protocol.lower(),
         **({"hostIP": pm.host_ip} if pm.host_ip and not ipaddress.ip_address(pm.host_ip).is_unspecified
            else {})}  # 0.0.0.0 / :: mean every address, as "" does
        for pm in req.port_mappings if pm.host_port > 0  # hostPort 0: nothing to publish (kubelet's rule)
    ]
    if mappings:
        rc["portMappings"] = mappings
    if req.bandwidth_ingress or req.bandwidth_egress:
        bw: dict[str, int] = {}
        if req.bandwidth_ingress:
            bw.update(ingressRate=req.bandwidth_ingress, ingressBurst=MAX_INT32)
        if req.bandwidth_egress:
            bw.update(egressRate=req.bandwidth_egress, egressBurst=MAX_INT32)
        rc["bandwidth"] = bw
    if req.ips:
        rc["ips"] = list(req.ips)
    if req.mac:
        rc["mac"] = req.mac
    return rc


def cni_args(req: PodNetworkRequest) -> str:
    pairs = [
        ("IgnoreUnknown", "1"),
        ("K8S_POD_NAMESPACE", req.pod_namespace),
        ("K8S_POD_NAME", req.pod_name),
        ("K8S_POD_INFRA_CONTAINER_ID", req.sandbox_id),
        ("K8S_POD_UID", req.pod_uid),
    ]
    return ";".join(f"{k}={_arg_value(v)}" for k, v in pairs)


def check_address(ip: str, subnets: list[str], network: str) -> None:
    """A requested address must lie in one of the network's subnets (else host-local's error is obscure)."""
    addr = ipaddress.ip_address(ip.split("/", 1)[0])
    if subnets and not any(addr in ipaddress.ip_network(s, strict=False) for s in subnets):
        raise errors.InvalidArgument(f"no configured subnet or ip-range contain the IP address {addr} "
                                     f"(network {network})")
