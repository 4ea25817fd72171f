"""pkg dataclasses -> CRI protobufs.  The only module that builds CRI messages from pkg models."""
from __future__ import annotations

import enum
from typing import TypeVar

from cri_api.v1 import api_pb2

from pkg import errors
from pkg.cni.model import PortMapping
from pkg.health import Condition
from pkg.model import container as model_container
from pkg.model import sandbox as model_sandbox
from pkg.model.state import ContainerState, SandboxState
from pkg.runtime.seccomp import ProfileType, SecurityProfile, profile_from_path


def runtime_condition(cond: Condition) -> api_pb2.RuntimeCondition:
    return api_pb2.RuntimeCondition(type=cond.type, status=cond.status, reason=cond.reason, message=cond.message)


# ---------------- requests -> pkg models ----------------
_PROTOCOLS = {api_pb2.TCP: "tcp", api_pb2.UDP: "udp", api_pb2.SCTP: "sctp"}
_PROFILE_TYPES = {
    api_pb2.SecurityProfile.RuntimeDefault: ProfileType.RUNTIME_DEFAULT,
    api_pb2.SecurityProfile.Unconfined: ProfileType.UNCONFINED,
    api_pb2.SecurityProfile.Localhost: ProfileType.LOCALHOST,
}


def _profile(field: api_pb2.SecurityProfile | None, legacy_path: str) -> SecurityProfile | None:
    """The typed profile wins; otherwise kubelet's legacy path form (runtime/default, localhost/<path>)."""
    if field is not None:
        if field.profile_type not in _PROFILE_TYPES:
            raise errors.InvalidArgument(f"unknown security profile type {field.profile_type}")
        return SecurityProfile(_PROFILE_TYPES[field.profile_type], field.localhost_ref)
    return profile_from_path(legacy_path)


E = TypeVar("E", bound=enum.Enum)


def _enum(cls: type[E], value: int, what: str) -> E:
    """A request's enum value as the model's enum: an unknown value (proto3 enums are open) is the caller's
    error, never an internal one."""
    try:
        return cls(value)
    except ValueError:
        raise errors.InvalidArgument(f"unknown {what} {value}") from None


def _namespaces(opt: api_pb2.NamespaceOption) -> model_sandbox.NamespaceOptions:
    def mode(value: int) -> model_sandbox.NamespaceMode:
        return _enum(model_sandbox.NamespaceMode, value, "namespace mode")

    return model_sandbox.NamespaceOptions(
        network=mode(opt.network), pid=mode(opt.pid), ipc=mode(opt.ipc), target_id=opt.target_id
    )


def sandbox_config(c: api_pb2.PodSandboxConfig) -> model_sandbox.SandboxConfig:
    sec = c.linux.security_context
    return model_sandbox.SandboxConfig(
        name=c.metadata.name,
        uid=c.metadata.uid,
        namespace=c.metadata.namespace,
        attempt=c.metadata.attempt,
        hostname=c.hostname,
        log_directory=c.log_directory,
        dns=model_sandbox.DNSConfig(tuple(c.dns_config.servers), tuple(c.dns_config.searches),
                                    tuple(c.dns_config.options)) if c.HasField("dns_config") else None,
        port_mappings=[
            PortMapping(container_port=p.container_port, host_port=p.host_port,
                        protocol=_PROTOCOLS.get(p.protocol, "tcp"), host_ip=p.host_ip)
            for p in c.port_mappings
        ],
        labels=dict(c.labels),
        annotations=dict(c.annotations),
        cgroup_parent=c.linux.cgroup_parent,
        sysctls=dict(c.linux.sysctls),
        namespace_options=_namespaces(sec.namespace_options),
        privileged=sec.privileged,
        run_as_user=sec.run_as_user.value if sec.HasField("run_as_user") else None,
        run_as_group=sec.run_as_group.value if sec.HasField("run_as_group") else None,
        supplemental_groups=list(sec.supplemental_groups),
        readonly_rootfs=sec.readonly_rootfs,
        seccomp=_profile(sec.seccomp if sec.HasField("seccomp") else None, sec.seccomp_profile_path),
    )


def resources(r: api_pb2.LinuxContainerResources) -> model_container.Resources:
    return model_container.Resources(
        cpu_period=r.cpu_period, cpu_quota=r.cpu_quota, cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes, memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes,
        oom_score_adj=r.oom_score_adj, cpuset_cpus=r.cpuset_cpus, cpuset_mems=r.cpuset_mems,
        hugepage_limits=tuple(model_container.HugepageLimit(h.page_size, h.limit) for h in r.hugepage_limits),
        unified=dict(r.unified),
    )


def container_config(c: api_pb2.ContainerConfig) -> model_container.ContainerConfig:
    sec = c.linux.security_context
    if any(m.image.image for m in c.mounts):
        # kubelet and critest read UNIMPLEMENTED as "no image volumes here"; any other error fails the pod.
        raise errors.NotImplementedYet("image volume mounts (Mount.image, KEP-4639) are not supported")
    return model_container.ContainerConfig(
        name=c.metadata.name,
        attempt=c.metadata.attempt,
        image=c.image.image,
        command=list(c.command),
        args=list(c.args),
        working_dir=c.working_dir,
        envs=[(e.key, e.value) for e in c.envs],
        mounts=[
            model_container.Mount(m.container_path, m.host_path, m.readonly,
                                  _enum(model_container.Propagation, m.propagation, "mount propagation"),
                                  recursive_read_only=m.recursive_read_only, selinux_relabel=m.selinux_relabel)
            for m in c.mounts
        ],
        devices=[model_container.Device(d.container_path, d.host_path, d.permissions or "rwm") for d in c.devices],
        labels=dict(c.labels),
        annotations=dict(c.annotations),
        log_path=c.log_path,
        stdin=c.stdin,
        stdin_once=c.stdin_once,
        tty=c.tty,
        resources=resources(c.linux.resources) if c.linux.HasField("resources") else None,
        security=model_container.ContainerSecurity(
            privileged=sec.privileged,
            capabilities_add=list(sec.capabilities.add_capabilities),
            capabilities_drop=list(sec.capabilities.drop_capabilities),
            capabilities_add_ambient=list(sec.capabilities.add_ambient_capabilities),
            namespace_options=_namespaces(sec.namespace_options),
            run_as_user=sec.run_as_user.value if sec.HasField("run_as_user") else None,
            run_as_group=sec.run_as_group.value if sec.HasField("run_as_group") else None,
            run_as_username=sec.run_as_username,
            supplemental_groups=list(sec.supplemental_groups),
            strict_supplemental_groups=sec.supplemental_groups_policy == api_pb2.SupplementalGroupsPolicy.Strict,
            readonly_rootfs=sec.readonly_rootfs,
            no_new_privs=sec.no_new_privs,
            masked_paths=list(sec.masked_paths) if sec.masked_paths else None,
            readonly_paths=list(sec.readonly_paths) if sec.readonly_paths else None,
            seccomp=_profile(sec.seccomp if sec.HasField("seccomp") else None, sec.seccomp_profile_path),
            apparmor=_profile(sec.apparmor if sec.HasField("apparmor") else None, sec.apparmor_profile),
        ),
    )


# ---------------- pkg models -> responses ----------------
_SANDBOX_STATES = {
    SandboxState.READY: api_pb2.SANDBOX_READY,
    SandboxState.NOTREADY: api_pb2.SANDBOX_NOTREADY,
    SandboxState.UNKNOWN: api_pb2.SANDBOX_NOTREADY,
}
CONTAINER_STATES = {
    ContainerState.CREATED: api_pb2.CONTAINER_CREATED,
    ContainerState.RUNNING: api_pb2.CONTAINER_RUNNING,
    ContainerState.EXITED: api_pb2.CONTAINER_EXITED,
    ContainerState.UNKNOWN: api_pb2.CONTAINER_UNKNOWN,
}


def sandbox_state(state: SandboxState) -> int:
    return _SANDBOX_STATES[state]


def _sandbox_metadata(m: model_sandbox.SandboxMetadata) -> api_pb2.PodSandboxMetadata:
    c = m.config
    return api_pb2.PodSandboxMetadata(name=c.name, uid=c.uid, namespace=c.namespace, attempt=c.attempt)


def pod_sandbox(m: model_sandbox.SandboxMetadata, s: model_sandbox.SandboxStatus) -> api_pb2.PodSandbox:
    return api_pb2.PodSandbox(
        id=m.id, metadata=_sandbox_metadata(m), state=_SANDBOX_STATES[s.state], created_at=m.created_at,
        labels=m.config.labels, annotations=m.config.annotations, runtime_handler=m.runtime_handler,
    )


def pod_sandbox_status(m: model_sandbox.SandboxMetadata, s: model_sandbox.SandboxStatus) -> api_pb2.PodSandboxStatus:
    ns = m.config.namespace_options
    return api_pb2.PodSandboxStatus(
        id=m.id,
        metadata=_sandbox_metadata(m),
        state=_SANDBOX_STATES[s.state],
        created_at=m.created_at,
        network=api_pb2.PodSandboxNetworkStatus(
            ip=s.ip, additional_ips=[api_pb2.PodIP(ip=ip) for ip in s.additional_ips]
        ),
        linux=api_pb2.LinuxPodSandboxStatus(namespaces=api_pb2.Namespace(options=api_pb2.NamespaceOption(
            network=api_pb2.NamespaceMode.Value(ns.network.name), pid=api_pb2.NamespaceMode.Value(ns.pid.name),
            ipc=api_pb2.NamespaceMode.Value(ns.ipc.name), target_id=ns.target_id))),
        labels=m.config.labels,
        annotations=m.config.annotations,
        runtime_handler=m.runtime_handler,
    )


def _container_metadata(m: model_container.ContainerMetadata) -> api_pb2.ContainerMetadata:
    return api_pb2.ContainerMetadata(name=m.config.name, attempt=m.config.attempt)


def container(m: model_container.ContainerMetadata, s: model_container.ContainerStatus) -> api_pb2.Container:
    return api_pb2.Container(
        id=m.id, pod_sandbox_id=m.sandbox_id, metadata=_container_metadata(m),
        image=api_pb2.ImageSpec(image=m.config.image), image_ref=m.image_id, state=CONTAINER_STATES[s.state],
        created_at=m.created_at, labels=m.config.labels, annotations=m.config.annotations, image_id=m.image_id,
    )


def linux_resources(r: model_container.Resources) -> api_pb2.LinuxContainerResources:
    return api_pb2.LinuxContainerResources(
        cpu_period=r.cpu_period, cpu_quota=r.cpu_quota, cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory_limit_in_bytes, memory_swap_limit_in_bytes=r.memory_swap_limit_in_bytes,
        oom_score_adj=r.oom_score_adj or 0, cpuset_cpus=r.cpuset_cpus, cpuset_mems=r.cpuset_mems,
        hugepage_limits=[api_pb2.HugepageLimit(page_size=h.page_size, limit=h.limit) for h in r.hugepage_limits],
        unified=r.unified,
    )


def container_status(
    m: model_container.ContainerMetadata, s: model_container.ContainerStatus
) -> api_pb2.ContainerStatus:
    resources = s.resources or m.config.resources
    return api_pb2.ContainerStatus(
        id=m.id,
        metadata=_container_metadata(m),
        state=CONTAINER_STATES[s.state],
        created_at=m.created_at,
        started_at=s.started_at,
        finished_at=s.finished_at,
        exit_code=s.exit_code,
        image=api_pb2.ImageSpec(image=m.config.image),
        image_ref=m.image_id,
        image_id=m.image_id,
        reason=s.reason,
        message=s.message,
        labels=m.config.labels,
        annotations=m.config.annotations,
        mounts=[
            api_pb2.Mount(container_path=x.container_path, host_path=x.host_path, readonly=x.readonly,
                          propagation=api_pb2.MountPropagation.Value(f"PROPAGATION_{x.propagation.name}"))
            for x in m.config.mounts
        ],
        log_path=m.log_path,
        resources=api_pb2.ContainerResources(linux=linux_resources(resources)) if resources else None,
        user=api_pb2.ContainerUser(linux=api_pb2.LinuxContainerUser(
            uid=m.user.uid, gid=m.user.gid, supplemental_groups=m.user.supplemental_groups)) if m.user else None,
    )
