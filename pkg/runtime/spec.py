"""OCI runtime specs for runc, built as containerd's CRI builds them.

``build_container_spec`` follows ``buildLinuxSpec`` (internal/cri/server) on
top of containerd's default Unix spec; ``build_sandbox_spec`` follows
``sandboxContainerSpec`` for the pod infra container.  Both return JSON-ready
dicts and raise ``pkg.errors`` kinds on bad input.  They read host and image
files (devices, bind sources, /etc/passwd, seccomp profiles): call them via
``asyncio.to_thread``.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from pkg.errors import InvalidArgument
from pkg.images.model import ImageConfig
from pkg.runtime import caps, seccomp, spec_mounts
from pkg.runtime.resources import clamp_oom_score_adj, clamp_rlimits, linux_resources
from pkg.runtime.spec_options import ContainerSpecOptions, HostInfo, Namespace, SandboxSpecOptions
from pkg.runtime.user import resolve_user, user_string

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def process_args(command: Sequence[str] | None, args: Sequence[str], image: ImageConfig) -> list[str]:
    """containerd's ``WithProcessArgs`` (from moby): overrides against the image ENTRYPOINT and CMD.

    No command: the image's CMD stands in for missing args, and the image's
    ENTRYPOINT is used unless the command was explicitly set empty.
    """
    cmd = list(command) if command is not None else None
    argv = list(args)
    if not cmd:
        if not argv:
            argv = list(image.cmd)
        if cmd is None and image.entrypoint != [""]:
            cmd = list(image.entrypoint)
    full = (cmd or []) + argv
    if not full:
        raise InvalidArgument("no command specified: neither the container nor its image gives one")
    return full


def merge_env(base: Iterable[str], overrides: Iterable[str]) -> list[str]:
    """Set or replace ``KEY=value`` entries in order; a bare ``KEY`` unsets (containerd's replaceOrAppend)."""
    out: list[str | None] = []
    index: dict[str, int] = {}
    for entry in [*base, *overrides]:
        key, sep, _ = entry.partition("=")
        if not key:
            raise InvalidArgument(f"invalid environment entry {entry!r}")
        if "\0" in entry:
            raise InvalidArgument(f"environment entry for {key!r} contains a NUL byte")
        if not sep:
            if key in index:
                out[index.pop(key)] = None
            continue
        if key in index:
            out[index[key]] = entry
        else:
            index[key] = len(out)
            out.append(entry)
    return [e for e in out if e is not None]


def check_hostname(hostname: str) -> str:
    """The UTS hostname must fit the kernel's 64 bytes (HOST_NAME_MAX) and be a plain name."""
    if len(hostname.encode()) > 64 or any(ch.isspace() or ch in "/\0" for ch in hostname):
        raise InvalidArgument(f"invalid hostname {hostname!r}: at most 64 bytes, no spaces or slashes")
    return hostname


def _namespaces(pairs: Iterable[tuple[str, Namespace]]) -> list[dict[str, str]]:
    out = []
    for kind, ns in pairs:
        if ns.mode == "host":
            continue
        if ns.mode == "join":
            if not ns.path.startswith("/"):
                raise InvalidArgument(f"{kind} namespace path {ns.path!r} must be absolute")
            out.append({"type": kind, "path": ns.path})
        else:
            out.append({"type": kind})
    return out


def _user(rootfs: Any, user: str, groups: Sequence[int], merge: bool) -> dict[str, Any]:
    ids = resolve_user(rootfs, user, supplemental_groups=groups, merge_image_groups=merge)
    out: dict[str, Any] = {"uid": ids.uid, "gid": ids.gid}
    if ids.additional_gids:
        out["additionalGids"] = list(ids.additional_gids)
    return out


def build_container_spec(opts: ContainerSpecOptions, host: HostInfo | None = None) -> dict[str, Any]:
    """The OCI runtime spec of a container (runc), merged from its image config and the request."""
    host = host or HostInfo.probe()
    if not opts.id:
        raise InvalidArgument("container id must not be empty")
    if opts.privileged and not opts.sandbox_privileged:
        raise InvalidArgument("no privileged container allowed in a sandbox that is not privileged")

    env = merge_env([DEFAULT_PATH], ["TERM=xterm"] if opts.tty else [])
    if opts.hostname:
        env = merge_env(env, [f"HOSTNAME={opts.hostname}"])
    env = merge_env(env, [*opts.image.env, *opts.env])

    user = user_string(username=opts.run_as_username, uid=opts.run_as_user, gid=opts.run_as_group,
                       image_user=opts.image.user)
    ambient = caps.ambient_caps(opts.add_ambient_capabilities, opts.drop_capabilities, available=host.capabilities)
    cap_list = caps.container_caps([*opts.add_capabilities, *ambient], opts.drop_capabilities,
                                   privileged=opts.privileged, available=host.capabilities)
    capabilities: dict[str, list[str]] = {"bounding": cap_list, "effective": cap_list, "permitted": cap_list}
    if ambient:
        capabilities.update(inheritable=ambient, ambient=ambient)
    process: dict[str, Any] = {
        "terminal": opts.tty,
        "user": _user(opts.image_files or opts.rootfs_path, user, opts.supplemental_groups, opts.merge_image_groups),
        "args": process_args(opts.command, opts.args, opts.image),
        "env": env,
        "cwd": opts.working_dir or opts.image.working_dir or "/",
        "capabilities": capabilities,
        "noNewPrivileges": opts.no_new_privs,
    }
    if not process["cwd"].startswith("/"):
        raise InvalidArgument(f"working directory {process['cwd']!r} must be an absolute path")
    apparmor = seccomp.apparmor_profile(opts.apparmor, privileged=opts.privileged, enabled=host.apparmor)
    if apparmor:
        process["apparmorProfile"] = apparmor
    if opts.rlimits:
        process["rlimits"] = clamp_rlimits(opts.rlimits, host.rlimits_hard)
    if opts.resources is not None:
        adj = opts.resources.oom_score_adj if opts.resources.oom_score_adj is not None else 0
        process["oomScoreAdj"] = clamp_oom_score_adj(adj, host.oom_score_adj)

    user_mounts = list(opts.mounts)
    extra = spec_mounts.sandbox_mounts(opts.sandbox_files, readonly=opts.readonly_rootfs, user_mounts=user_mounts)
    if opts.volumes_dir is not None:
        extra += spec_mounts.image_volume_mounts(opts.image.volumes, [*user_mounts, *extra], opts.volumes_dir,
                                                 opts.rootfs_path)
    binds, rootfs_propagation = spec_mounts.bind_mounts(
        [*user_mounts, *extra], mountinfo=host.mountinfo, create_missing=opts.create_missing_host_paths
    )
    mounts = spec_mounts.merge_mounts(spec_mounts.default_mounts(privileged=opts.privileged), binds)

    nodes, device_rules = spec_mounts.devices(opts.devices)
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}, *device_rules]}
    if opts.privileged:
        known = {n["path"] for n in nodes}
        nodes += [n for n in spec_mounts.host_devices(host.dev_root) if n["path"] not in known]
        resources["devices"] = [{"allow": True, "access": "rwm"}]
    if opts.resources is not None:
        resources.update(linux_resources(opts.resources, host.cgroups))

    spec_mounts.validate_sysctls(opts.sysctls, network=opts.network, ipc=opts.ipc, uts=opts.uts)
    namespaces = _namespaces([("pid", opts.pid), ("ipc", opts.ipc), ("uts", opts.uts), ("mount", Namespace.new()),
                              ("network", opts.network)])
    if opts.cgroupns if opts.cgroupns is not None else host.cgroups.v2 and not opts.privileged:
        namespaces.append({"type": "cgroup"})
    linux: dict[str, Any] = {"resources": resources, "namespaces": namespaces}
    if opts.cgroups_path:
        linux["cgroupsPath"] = opts.cgroups_path
    if nodes:
        linux["devices"] = nodes
    if opts.sysctls:
        linux["sysctl"] = dict(opts.sysctls)
    if not opts.privileged:
        masked = spec_mounts.DEFAULT_MASKED_PATHS if opts.masked_paths is None else opts.masked_paths
        readonly = spec_mounts.DEFAULT_READONLY_PATHS if opts.readonly_paths is None else opts.readonly_paths
        linux["maskedPaths"] = list(masked)
        linux["readonlyPaths"] = list(readonly)
    filt = seccomp.seccomp_spec(opts.seccomp, privileged=opts.privileged, caps=cap_list, arch=host.arch,
                                kernel=host.kernel)
    if filt is not None:
        linux["seccomp"] = filt
    if rootfs_propagation:
        linux["rootfsPropagation"] = rootfs_propagation

    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": opts.root_path, "readonly": opts.readonly_rootfs},
        "mounts": mounts,
        "linux": linux,
    }
    if opts.hostname and opts.uts.mode == "new":
        spec["hostname"] = check_hostname(opts.hostname)
    if opts.annotations:
        spec["annotations"] = dict(opts.annotations)
    return spec


def build_sandbox_spec(opts: SandboxSpecOptions, host: HostInfo | None = None) -> dict[str, Any]:
    """The pod infra container's spec: the pause image's command, read-only, holding the pod's PID namespace."""
    host = host or HostInfo.probe()
    if not opts.image.entrypoint and not opts.image.cmd:
        raise InvalidArgument("the pause image has neither an entrypoint nor a cmd")
    user = user_string(uid=opts.run_as_user, gid=opts.run_as_group, image_user=opts.image.user)
    cap_list = caps.container_caps(available=host.capabilities)
    process: dict[str, Any] = {
        "terminal": False,
        "user": _user(opts.rootfs_path, user, opts.supplemental_groups, False),
        "args": [*opts.image.entrypoint, *opts.image.cmd],
        "env": merge_env([DEFAULT_PATH], opts.image.env),
        "cwd": opts.image.working_dir or "/",
        "capabilities": {"bounding": cap_list, "effective": cap_list, "permitted": cap_list},
        "noNewPrivileges": False,
        "oomScoreAdj": clamp_oom_score_adj(opts.oom_score_adj, host.oom_score_adj),
    }
    binds = []
    if opts.shm_path:
        binds.append({"destination": spec_mounts.DEV_SHM, "type": "bind", "source": opts.shm_path,
                      "options": ["rbind", "ro", "nosuid", "nodev", "noexec"]})
    if opts.resolv_conf_path:
        binds.append({"destination": spec_mounts.RESOLV_CONF, "type": "bind", "source": opts.resolv_conf_path,
                      "options": ["rbind", "ro"]})
    defaults = [m for m in spec_mounts.default_mounts(privileged=False) if m["destination"] != "/sys/fs/cgroup"]
    mounts = spec_mounts.merge_mounts(defaults, binds)
    spec_mounts.validate_sysctls(opts.sysctls, network=opts.network, ipc=opts.ipc, uts=opts.uts)
    resources: dict[str, Any] = {"devices": [{"allow": False, "access": "rwm"}]}
    if opts.cpu_shares:
        resources["cpu"] = {"shares": opts.cpu_shares}
    linux: dict[str, Any] = {
        "resources": resources,
        "namespaces": _namespaces([("pid", opts.pid), ("ipc", opts.ipc), ("uts", opts.uts),
                                   ("mount", Namespace.new()), ("network", opts.network)]),
        "maskedPaths": list(spec_mounts.DEFAULT_MASKED_PATHS),
        "readonlyPaths": list(spec_mounts.DEFAULT_READONLY_PATHS),
    }
    if opts.cgroups_path:
        linux["cgroupsPath"] = opts.cgroups_path
    if opts.sysctls:
        linux["sysctl"] = dict(opts.sysctls)
    filt = seccomp.seccomp_spec(opts.seccomp, privileged=opts.privileged, caps=cap_list, arch=host.arch,
                                kernel=host.kernel)
    if filt is not None:
        linux["seccomp"] = filt
    spec: dict[str, Any] = {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": opts.root_path, "readonly": True},
        "mounts": mounts,
        "linux": linux,
    }
    if opts.hostname and opts.uts.mode != "host":
        spec["hostname"] = check_hostname(opts.hostname)
    if opts.annotations:
        spec["annotations"] = dict(opts.annotations)
    return spec
