from pkg.cni.model import PortMapping
from pkg.model.codec import from_dict, to_dict
from pkg.model.container import ContainerConfig, ContainerMetadata, ContainerStatus, Mount, Resources
from pkg.model.sandbox import DNSConfig, NamespaceMode, NamespaceOptions, SandboxConfig, SandboxMetadata
from pkg.model.state import ContainerState


def test_sandbox_metadata_round_trips() -> None:
    meta = SandboxMetadata(
        id="a" * 64,
        config=SandboxConfig(
            name="p", uid="u", namespace="n", dns=DNSConfig(servers=("1.1.1.1",)),
            port_mappings=[PortMapping(80, 8080, "tcp", "127.0.0.1")],
            namespace_options=NamespaceOptions(network=NamespaceMode.NODE, pid=NamespaceMode.POD),
            run_as_user=0,
        ),
        runtime_handler="runc", created_at=1, netns_path="/run/x",
    )
    data = to_dict(meta)
    assert data["config"]["namespace_options"]["network"] == 2
    assert from_dict(SandboxMetadata, data) == meta


def test_container_round_trips_and_ignores_unknown_keys() -> None:
    meta = ContainerMetadata(
        id="c", sandbox_id="s",
        config=ContainerConfig(name="c", image="busybox", envs=[("A", "1")], mounts=[Mount("/a", "/b", True)],
                               resources=Resources(cpu_shares=2)),
        image_id="sha256:x", image_ref="docker.io/library/busybox:latest", created_at=5,
    )
    data = to_dict(meta)
    data["future_field"] = 1
    assert from_dict(ContainerMetadata, data) == meta
    status = ContainerStatus(ContainerState.EXITED, exit_code=3, reason="Error")
    assert from_dict(ContainerStatus, to_dict(status)) == status
