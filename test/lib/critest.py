"""The cri-tools validation suite (critest) ported: one narwhald per module and critest's framework helpers.

critest's specs use ``framework.CreatePodSandboxForContainer``,
``CreateDefaultContainer`` (busybox running ``top``), ``ExecSync`` with a
30 s timeout and a log parser for the CRI format.  These are the same helpers
over our offline busybox (hack/mkimage.py) pushed to the session registry.
"""
from __future__ import annotations

import re
import shutil
import tempfile
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import grpc
import mkimage
import pytest
from cri_api.v1 import api_pb2, api_pb2_grpc

from lib import cri, critest_images
from lib.cni_host import InstanceNetwork
from lib.daemon import DaemonProcess, start_daemon
from lib.registry import Registry

DEFAULT_EXEC_TIMEOUT = 30  # critest's defaultExecSyncTimeout
DEFAULT_LOG = "hello World"
PAUSE_CMD = ["sh", "-c", "top"]  # critest's pauseCmd
DEFAULT_CMD = ["top"]  # framework.DefaultContainerCommand
DEFAULT_POD_LABELS = {"io.kubernetes.container.name": "critest"}  # framework.DefaultPodLabels' key
POD_FOR_CONTAINER = "create-PodSandbox-for-container"  # framework.CreatePodSandboxForContainer's name prefix
UID_PREFIX, NAMESPACE_PREFIX = "cri-test-uid", "cri-test-namespace"  # framework.DefaultUIDPrefix / ...NamespacePrefix
DEFAULT_ATTEMPT = 2  # framework.DefaultAttempt
LOG_LINE = re.compile(r"^(\S+) (stdout|stderr) ([PF]) (.*)$")


@dataclass
class ExecResult:
    stdout: str
    stderr: str
    exit_code: int
    error: grpc.RpcError | None = None

    @property
    def failed(self) -> bool:
        """critest's ``err != nil``: the CRI client reports a non-zero exit code as an error too."""
        return self.error is not None or self.exit_code != 0


@dataclass
class Crit:
    """What critest's framework gives a spec: the runtime and image clients and the test image."""

    daemon: DaemonProcess
    image: str
    has_tools: bool = False  # the image has pgrep, pkill, ipcs, ipcrm (push_tools_busybox)
    pods: list[str] = field(default_factory=list)
    dirs: list[Path] = field(default_factory=list)

    @property
    def rs(self) -> api_pb2_grpc.RuntimeServiceStub:
        return self.daemon.runtime()

    def require_tools(self) -> None:
        """Skip a spec that runs pgrep or ipcs where they could not be built (no gcc)."""
        if not self.has_tools:
            pytest.skip("pgrep/ipcs for the test image are built with gcc (test/lib/critest_tools.c); none here")

    def tempdir(self, prefix: str = "critest") -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
        self.dirs.append(path)
        return path

    def pod_config(self, prefix: str = POD_FOR_CONTAINER, *, log_dir: Path | None = None,
                   namespaces: api_pb2.NamespaceOption | None = None, **kwargs: object) -> api_pb2.PodSandboxConfig:
        """framework.BuildPodSandboxMetadata as critest fills it: ``<prefix>-<uuid>`` (68 bytes for
        CreatePodSandboxForContainer's pods, more than a hostname may hold), uid and namespace with
        critest's prefixes, attempt 2, no hostname unless the spec gives one."""
        config = api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=f"{prefix}-{uuid.uuid4()}", uid=f"{UID_PREFIX}{uuid.uuid4()}",
                                                namespace=f"{NAMESPACE_PREFIX}{uuid.uuid4()}",
                                                attempt=DEFAULT_ATTEMPT),
            labels=DEFAULT_POD_LABELS,
            log_directory=str(log_dir) if log_dir else "",
            **kwargs,  # type: ignore[arg-type]
        )
        if namespaces is not None:
            config.linux.security_context.namespace_options.CopyFrom(namespaces)
        return config

    def run_pod(self, config: api_pb2.PodSandboxConfig) -> str:
        pod_id = self.rs.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
        self.pods.append(pod_id)
        return str(pod_id)

    def pod_for_container(self, prefix: str = POD_FOR_CONTAINER) -> tuple[str, api_pb2.PodSandboxConfig]:
        """framework.CreatePodSandboxForContainer."""
        config = self.pod_config(prefix)
        return self.run_pod(config), config

    def pod_with_log_dir(self, prefix: str = "PodSandbox-with-log-directory") -> tuple[str, api_pb2.PodSandboxConfig]:
        """createPodSandboxWithLogDirectory: a log directory under a fresh temp dir."""
        config = self.pod_config(prefix)
        log_dir = self.tempdir("podLogTest") / config.metadata.name
        log_dir.mkdir()
        config.log_directory = str(log_dir)
        return self.run_pod(config), config

    def container_config(self, prefix: str = "c", command: list[str] | None = None, *, image: str = "",
                         **kwargs: object) -> api_pb2.ContainerConfig:
        return api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name=f"{prefix}{uuid.uuid4()}", attempt=DEFAULT_ATTEMPT),
            image=api_pb2.ImageSpec(image=image or self.image),
            command=DEFAULT_CMD if command is None else command,
            **kwargs,  # type: ignore[arg-type]
        )

    def create(self, pod_id: str, pod_config: api_pb2.PodSandboxConfig, config: api_pb2.ContainerConfig) -> str:
        return str(self.rs.CreateContainer(api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=config, sandbox_config=pod_config), timeout=120).container_id)

    def create_error(self, pod_id: str, pod_config: api_pb2.PodSandboxConfig,
                     config: api_pb2.ContainerConfig) -> grpc.StatusCode:
        """framework.CreateContainerWithError: the create must fail; returns its code."""
        code = cri.code_of(lambda: self.create(pod_id, pod_config, config))
        assert code != grpc.StatusCode.OK, "CreateContainer should have failed"
        return code

    def create_default(self, pod_id: str, pod_config: api_pb2.PodSandboxConfig, prefix: str = "c",
                       **kwargs: object) -> str:
        """framework.CreateDefaultContainer: busybox running ``top``."""
        return self.create(pod_id, pod_config, self.container_config(prefix, **kwargs))

    def start(self, container_id: str) -> None:
        self.rs.StartContainer(api_pb2.StartContainerRequest(container_id=container_id), timeout=120)

    def status(self, container_id: str, verbose: bool = False) -> api_pb2.ContainerStatusResponse:
        return self.rs.ContainerStatus(api_pb2.ContainerStatusRequest(container_id=container_id, verbose=verbose),
                                       timeout=30)

    def state(self, container_id: str) -> int:
        return int(self.status(container_id).status.state)

    def wait_state(self, container_id: str, state: int, timeout: float = 60.0) -> None:
        """critest's ``Eventually(getContainerStatus(...).State, time.Minute)``."""
        cri.wait_for(lambda: self.state(container_id) == state, timeout=timeout,
                     what=f"container state {api_pb2.ContainerState.Name(state)}")

    def start_running(self, container_id: str) -> None:
        """testStartContainer: start, then the container must reach RUNNING."""
        self.start(container_id)
        self.wait_state(container_id, api_pb2.CONTAINER_RUNNING)

    def exec(self, container_id: str, cmd: list[str], timeout: int = DEFAULT_EXEC_TIMEOUT) -> ExecResult:
        try:
            resp = self.rs.ExecSync(api_pb2.ExecSyncRequest(container_id=container_id, cmd=cmd, timeout=timeout),
                                    timeout=timeout + 30)
        except grpc.RpcError as err:
            return ExecResult("", "", -1, err)
        return ExecResult(resp.stdout.decode(errors="replace"), resp.stderr.decode(errors="replace"), resp.exit_code)

    def exec_ok(self, container_id: str, cmd: list[str]) -> str:
        """critest's execSyncContainer: no error and an empty stderr; returns stdout."""
        result = self.exec(container_id, cmd)
        assert not result.failed, f"{cmd}: {result}"
        assert result.stderr == "", f"{cmd}: stderr should be empty: {result.stderr!r}"
        return result.stdout

    def list_containers(self, **filter_fields: object) -> list[api_pb2.Container]:
        return list(self.rs.ListContainers(api_pb2.ListContainersRequest(
            filter=api_pb2.ContainerFilter(**filter_fields)), timeout=30).containers)  # type: ignore[arg-type]

    def remove_pod(self, pod_id: str) -> None:
        """critest's AfterEach: StopPodSandbox and RemovePodSandbox must both succeed."""
        self.rs.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
        self.rs.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=120)
        if pod_id in self.pods:
            self.pods.remove(pod_id)

    def cleanup(self) -> None:
        for pod_id in list(self.pods):
            self.remove_pod(pod_id)
        for path in self.dirs:
            if path.is_symlink():
                path.unlink()
            else:
                shutil.rmtree(path, ignore_errors=True)
        self.dirs.clear()


WEB_SERVER_PORT = 80  # critest: webServerContainerPort
HOST_PORT_FOR_PORT_MAPPING = 12000  # webServerHostPortForPortMapping
WEB_SERVER = ["sh", "-c", "mkdir -p /www && echo critest > /www/index.html && exec httpd -f -p {port} -h /www"]


def web_server(crit: Crit, pod_id: str, pod_config: api_pb2.PodSandboxConfig, prefix: str,
               port: int = WEB_SERVER_PORT) -> str:
    """createWebServerContainer (busybox httpd instead of nginx)."""
    command = [*WEB_SERVER[:2], WEB_SERVER[2].format(port=port)]
    return crit.create(pod_id, pod_config, crit.container_config(prefix, command, linux=api_pb2.LinuxContainerConfig()))


def check_main_page(crit: Crit, pod_id: str, host_port: int, container_port: int) -> None:
    """checkMainPage: GET / answers 200, on 127.0.0.1:hostPort or on the pod IP:containerPort."""
    if host_port:
        url = f"http://127.0.0.1:{host_port}/"
    else:
        status = crit.rs.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod_id), timeout=30).status
        assert status.network.ip, "The IP should not be empty."
        url = f"http://{status.network.ip}:{container_port}/"
    codes: list[int] = []

    def fetched() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - loopback or the pod's own IP
                codes.append(resp.status)
                return True
        except OSError:
            return False

    cri.wait_for(fetched, timeout=60, what=f"GET {url}")
    assert codes[-1] == 200


def push_tools_busybox(registry: Registry) -> str:
    """mkimage's busybox plus critest's missing applets (pgrep, pkill, ipcs, ipcrm from
    test/lib/critest_tools.c), pushed once per registry; "" where there is no gcc to build them."""
    if registry.port not in _TOOLS_IMAGES:
        with tempfile.TemporaryDirectory(prefix="critest-tools-") as tmp:
            try:
                tools = critest_images.build_tools(Path(tmp)).read_bytes()
            except RuntimeError:
                _TOOLS_IMAGES[registry.port] = ""
            else:
                image = critest_images.image_with_layer(mkimage.build("busybox"), critest_images.tools_layer(tools))
                mkimage.RegistryClient(registry.host).push_image("critest/busybox", "tools", image)
                _TOOLS_IMAGES[registry.port] = f"{registry.host}/critest/busybox:tools"
    return _TOOLS_IMAGES[registry.port]


_TOOLS_IMAGES: dict[int, str] = {}


def push_variant(crit: Crit, registry: Registry, repo: str, layer: mkimage.LayerBuilder, **config: object) -> str:
    """Push and pull a busybox variant; returns its reference."""
    image = critest_images.image_with_layer(mkimage.build("busybox"), layer, **config)
    mkimage.RegistryClient(registry.host).push_image(repo, "latest", image)
    ref = f"{registry.host}/{repo}:latest"
    cri.pull(crit.daemon.images(), ref)
    return ref


def parse_log(path: Path) -> list[tuple[datetime, str, str]]:
    """critest's parseLogLine: every line is ``RFC3339Nano stream tag content``; content gets its newline back."""
    messages = []
    for line in path.read_text().splitlines():
        m = LOG_LINE.match(line)
        assert m, f"not a CRI log line: {line!r}"
        stamp = m.group(1)
        head, _, frac = stamp.rstrip("Z").partition(".")
        parsed = datetime.fromisoformat(head + ("." + frac[:6] if frac else "") + "+00:00")
        messages.append((parsed, m.group(2), m.group(4) + "\n"))
    return messages


def log_contains(path: Path, text: str, stream: str = "stdout") -> bool:
    """critest's verifyLogContents."""
    return any(msg == text and s == stream for _, s, msg in parse_log(path))


@pytest.fixture(scope="module", name="crit_daemon")
def crit_daemon_fixture(registry: Registry) -> Iterator[DaemonProcess]:
    """One narwhald for a whole critest module (critest too runs every spec against one runtime)."""
    d = start_daemon()
    try:
        for ref in (cri.push_busybox(registry), push_tools_busybox(registry)):
            if ref:
                cri.pull(d.images(), ref)
        yield d
    finally:
        network = InstanceNetwork.of(d.root, d.base / "net.d")
        d.destroy()
        network.remove()


@pytest.fixture(name="crit")
def crit_fixture(crit_daemon: DaemonProcess, registry: Registry) -> Iterator[Crit]:
    tools = push_tools_busybox(registry)
    c = Crit(crit_daemon, tools or cri.push_busybox(registry), has_tools=bool(tools))
    try:
        yield c
    finally:
        c.cleanup()
