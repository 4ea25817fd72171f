"""docker build with the real docker CLI (legacy builder protocol, as the CLI speaks it without buildx) against
narwhald: tags, -f, --target, --build-arg, --no-cache, -q, --iidfile, --label, multi-stage, .dockerignore, the
content-keyed cache (across a restart too), errors with moby's words, unsafe contexts, prune and df."""
from __future__ import annotations

import functools
import http.client
import http.server
import io
import json
import socket
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lib.daemon import mounts_under
from lib.docker import DockerDaemon, docker_daemon, eventually
from lib.registry import Registry


@pytest.fixture(scope="module")
def dockerd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


def build(dd: DockerDaemon, ctx: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return dd.docker("build", *args, str(ctx), check=check, timeout=300)


def write(ctx: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = ctx / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return ctx


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: Path) -> None:
        super().__init__("localhost", timeout=120)
        self._path = str(path)

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(self._path)


def post_build(dd: DockerDaemon, query: str, body: bytes) -> tuple[int, str]:
    conn = _UnixConnection(dd.daemon.docker_socket)
    try:
        conn.request("POST", f"/v1.45/build?{query}", body=body, headers={"Content-Type": "application/x-tar"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def tar_of(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


def file_member(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def run_output(dd: DockerDaemon, image: str, *cmd: str) -> str:
    """The output of a container of ``image`` (create/start/wait/logs: no race with a fast exit)."""
    container = dd.out("create", image, *cmd)
    try:
        dd.docker("start", container)
        assert dd.out("wait", container) == "0"
        return dd.docker("logs", container).stdout
    finally:
        dd.docker("rm", "-f", container, check=False)


def steps_using_cache(output: str) -> int:
    return output.count(" ---> Using cache")


def test_build_run_and_cache_by_content(dockerd: DockerDaemon, tmp_path: Path) -> None:
    ctx = write(tmp_path, {
        "Dockerfile": "FROM busybox\nENV GREETING=hello\nRUN echo built > /built && echo to-stderr >&2\n"
                      "COPY early.txt /app/\nCOPY late.txt /app/\nWORKDIR /app\nCMD [\"cat\", \"early.txt\", "
                      "\"late.txt\", \"/built\"]\n",
        "early.txt": "early\n", "late.txt": "late\n"})
    first = build(dockerd, ctx, "-t", "built:1")
    assert "Step 1/7 : FROM busybox" in first.stdout and "Step 3/7 : RUN echo built" in first.stdout
    assert " ---> Running in " in first.stdout and "Removing intermediate container" in first.stdout
    assert "to-stderr" in first.stdout and "Successfully tagged built:1" in first.stdout
    assert steps_using_cache(first.stdout) == 0
    assert run_output(dockerd, "built:1").split() == ["early", "late", "built"]
    config = json.loads(dockerd.out("image", "inspect", "built:1"))[0]["Config"]
    assert config["WorkingDir"] == "/app" and "GREETING=hello" in config["Env"]

    again = build(dockerd, ctx, "-t", "built:1")
    assert steps_using_cache(again.stdout) == 6  # every step after FROM
    (ctx / "late.txt").write_text("later\n")
    # mtime-only changes do not matter, content does: only the steps from the COPY of late.txt on run again
    (ctx / "early.txt").touch()
    changed = build(dockerd, ctx, "-t", "built:1")
    assert steps_using_cache(changed.stdout) == 3
    assert run_output(dockerd, "built:1").split() == ["early", "later", "built"]

    fresh = build(dockerd, ctx, "--no-cache", "-t", "built:1")
    assert steps_using_cache(fresh.stdout) == 0
    assert dockerd.docker("ps", "-aq").stdout.strip() == ""  # intermediate containers removed
    dockerd.docker("rmi", "built:1")


def test_multi_stage_target_args_and_copy_from(dockerd: DockerDaemon, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": (
        "ARG BASE=busybox\n"
        "FROM ${BASE} AS one\nARG WHO=nobody\nRUN echo \"one by $WHO\" > /one.txt\n"
        "FROM ${BASE} AS two\nRUN echo two > /two.txt\n"
        "FROM busybox AS unused\nRUN echo must-not-run\n"
        "FROM busybox AS final\nCOPY --from=one /one.txt /out/\nCOPY --from=two /two.txt /out/\n"
        "CMD [\"cat\", \"/out/one.txt\", \"/out/two.txt\"]\n"
        "FROM final AS after\nLABEL stage=after\n")})
    out = build(dockerd, ctx, "--target", "final", "--build-arg", "WHO=me", "-t", "multi:1").stdout
    assert "must-not-run" not in out and "LABEL stage=after" not in out
    assert "Step 1/9 :" in out and "Step 9/9 :" in out  # the needed stages only
    assert run_output(dockerd, "multi:1").split() == ["one", "by", "me", "two"]
    unknown = build(dockerd, ctx, "--target", "nope", check=False)
    assert unknown.returncode != 0 and 'target stage "nope" could not be found' in unknown.stderr
    unused_arg = build(dockerd, ctx, "--target", "two", "--build-arg", "NOT_DECLARED=1")
    assert "[Warning] One or more build-args [NOT_DECLARED] were not consumed" in unused_arg.stdout
    dockerd.docker("rmi", "multi:1")


def test_quiet_iidfile_labels_and_dockerfile_flag(dockerd: DockerDaemon, tmp_path: Path) -> None:
    ctx = write(tmp_path / "ctx", {"sub/custom.Dockerfile": "FROM busybox\nLABEL from=dockerfile\n"})
    iid = tmp_path / "iid"
    quiet = build(dockerd, ctx, "-q", "-f", str(ctx / "sub/custom.Dockerfile"), "--label", "extra=yes",
                  "--iidfile", str(iid), "-t", "quiet:1")
    image_id = quiet.stdout.strip()
    assert image_id.startswith("sha256:") and "\n" not in image_id and "Step" not in quiet.stdout
    assert iid.read_text().strip() == image_id  # with -q the CLI writes what it printed (moby ends it with \n)
    inspected = json.loads(dockerd.out("image", "inspect", "quiet:1"))[0]
    assert inspected["Id"] == image_id
    assert inspected["Config"]["Labels"] == {"from": "dockerfile", "extra": "yes"}
    dockerd.docker("rmi", "quiet:1")


def test_dockerignore_is_applied(dockerd: DockerDaemon, tmp_path: Path) -> None:
    ctx = write(tmp_path, {
        "Dockerfile": "FROM busybox\nCOPY . /ctx\nCMD [\"find\", \"/ctx\", \"-type\", \"f\"]\n",
        ".dockerignore": "*.log\nsecret\nignored/*\n!ignored/kept\n Dockerfile \n",
        "app.txt": "x", "debug.log": "x", "secret/key": "x", "ignored/gone": "x", "ignored/kept": "x"})
    build(dockerd, ctx, "-t", "ignore:1")
    files = sorted(run_output(dockerd, "ignore:1").split())
    assert files == ["/ctx/.dockerignore", "/ctx/app.txt", "/ctx/ignored/kept"]
    dockerd.docker("rmi", "ignore:1")


def test_copy_options_add_archive_and_scratch(dockerd: DockerDaemon, tmp_path: Path) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("inner/file.txt")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"inner"))
    ctx = write(tmp_path, {"Dockerfile": (
        "FROM busybox\n"
        "COPY --chown=1000:1000 --chmod=0640 a.txt /owned/\n"
        "ADD bundle.tar.gz /unpacked/\n"
        "COPY dir /dir-contents\n"
        "COPY *.txt /glob/\n"
        "RUN stat -c '%u:%g %a' /owned/a.txt && cat /unpacked/inner/file.txt && ls /dir-contents /glob\n"
        "FROM scratch\nCOPY --from=0 /owned/a.txt /\n"),
        "a.txt": "a", "b.txt": "b", "dir/nested/x": "x"})
    (ctx / "bundle.tar.gz").write_bytes(archive.getvalue())
    out = build(dockerd, ctx, "-t", "copies:1", "--no-cache").stdout
    assert "1000:1000 640" in out and "inner" in out
    assert "nested" in out and "a.txt\nb.txt" in out
    detail = json.loads(dockerd.out("image", "inspect", "copies:1"))[0]
    assert len(detail["RootFS"]["Layers"]) == 1
    dockerd.docker("rmi", "copies:1")


def test_errors_with_mobys_words(dockerd: DockerDaemon, tmp_path: Path) -> None:
    run_fails = build(dockerd, write(tmp_path / "a", {"Dockerfile": "FROM busybox\nRUN exit 3\n"}), "--force-rm",
                      check=False)
    assert run_fails.returncode == 3  # the CLI exits with errorDetail.code, as with dockerd
    assert "The command '/bin/sh -c exit 3' returned a non-zero code: 3" in run_fails.stderr
    parse_error = build(dockerd, write(tmp_path / "b", {"Dockerfile": "FROM busybox\nBOGUS x\n"}), check=False)
    assert "Error response from daemon: dockerfile parse error on line 2: unknown instruction: BOGUS" \
        in parse_error.stderr
    copy_missing = build(dockerd, write(tmp_path / "c", {"Dockerfile": "FROM busybox\nCOPY nope /x\n"}),
                         check=False)
    assert "COPY failed: file not found in build context or excluded by .dockerignore: stat nope: file does not " \
           "exist" in copy_missing.stderr
    assert dockerd.docker("ps", "-aq").stdout.strip() == ""  # --force-rm removed the failed step's container


def test_unsafe_contexts_and_protocol_errors(dockerd: DockerDaemon) -> None:
    dockerfile = file_member("Dockerfile", b"FROM busybox\nCOPY . /ctx\n")
    status, body = post_build(dockerd, "", tar_of([dockerfile, file_member("../escape", b"x")]))
    assert status == 400 and "outside of the context" in body
    link = tarfile.TarInfo("link")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc"
    status, body = post_build(dockerd, "", tar_of([dockerfile, (link, b""), file_member("link/passwd", b"x")]))
    assert status == 400 and "non-directory" in body
    device = tarfile.TarInfo("dev-null")
    device.type, device.devmajor, device.devminor = tarfile.CHRTYPE, 1, 3
    # A symlink pointing out of the context resolves inside it: COPY of it finds nothing there.
    outside = tarfile.TarInfo("shadow")
    outside.type, outside.linkname = tarfile.SYMTYPE, "/etc/shadow"
    context = tar_of([file_member("Dockerfile", b"FROM busybox\nCOPY shadow /x/\nCOPY dev-null* /x/\n"),
                      (device, b""), (outside, b"")])
    status, body = post_build(dockerd, "", context)
    assert status == 200 and '"errorDetail"' in body and "COPY failed: file not found" in body
    # quiet: nothing was written before the failure, so it is an HTTP error (as moby's unflushed writer)
    status, body = post_build(dockerd, "q=1", tar_of([
        file_member("Dockerfile", b"FROM busybox\nCOPY dev-null* /x/\n"), (device, b"")]))
    assert status == 400 and "COPY failed: no source files were specified" in body
    status, body = post_build(dockerd, "dockerfile=nope.Dockerfile", tar_of([dockerfile]))
    assert status == 400 and "Cannot locate specified Dockerfile: nope.Dockerfile" in body
    status, body = post_build(dockerd, "version=2", tar_of([dockerfile]))
    assert status == 400 and "version=1" in body
    status, body = post_build(dockerd, "squash=1", tar_of([dockerfile]))
    assert status == 400 and "experimental" in body
    status, body = post_build(dockerd, "", b"not a tar at all" * 100)
    assert status == 400 and "invalid build context" in body


def test_cache_survives_a_restart_and_prune_empties_it(dockerd: DockerDaemon, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN echo persisted > /p\nCOPY f /f\n", "f": "f"})
    build(dockerd, ctx)
    dockerd.daemon.stop()
    dockerd.daemon.start()
    assert steps_using_cache(build(dockerd, ctx).stdout) == 2
    df = dockerd.out("system", "df", "--format", "{{.Type}} {{.TotalCount}}")
    counts = dict(line.rsplit(" ", 1) for line in df.splitlines())
    assert int(counts["Build Cache"]) > 0
    pruned = dockerd.out("builder", "prune", "-af")
    assert "Total reclaimed space" in pruned
    df = dockerd.out("system", "df", "--format", "{{.Type}} {{.TotalCount}}")
    assert dict(line.rsplit(" ", 1) for line in df.splitlines())["Build Cache"] == "0"
    assert steps_using_cache(build(dockerd, ctx).stdout) == 0
    base = dockerd.daemon.root / "docker" / "build" / "tmp"
    assert not base.exists() or not list(base.iterdir())  # every build's scratch space is gone
    assert "narwhal-build-" not in ctr(dockerd, "snapshots", "ls")  # no step snapshot left active


def test_a_client_that_goes_away_leaves_nothing_behind(dockerd: DockerDaemon, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": "FROM busybox\nRUN sleep 300\n"})
    cli = subprocess.Popen(["/usr/local/bin/docker", "build", "--no-cache", str(ctx)], env=dockerd.daemon.docker_env(),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert eventually(lambda: dockerd.docker("ps", "-q").stdout.strip() != "", timeout=60)
    finally:
        cli.kill()
        cli.wait()
    assert eventually(lambda: dockerd.docker("ps", "-aq").stdout.strip() == "", timeout=60)
    scratch = dockerd.daemon.root / "docker" / "build" / "tmp"
    assert eventually(lambda: not scratch.exists() or not list(scratch.iterdir()), timeout=30)
    assert not [lease for lease in ctr(dockerd, "leases", "ls", "-q").split() if lease.startswith("narwhal-build-")]
    assert "narwhal-build-" not in ctr(dockerd, "snapshots", "ls")
    assert not mounts_under(dockerd.daemon.base / "root")


def ctr(dd: DockerDaemon, *args: str) -> str:
    return subprocess.run(["ctr", "--address", str(dd.daemon.state / "containerd" / "containerd.sock"),
                           "-n", "narwhal-docker", *args], capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(not Path("/usr/bin/docker-compose").exists(), reason="Debian's docker-compose is not installed")
def test_docker_compose_build_and_up(dockerd: DockerDaemon, tmp_path: Path) -> None:
    write(tmp_path, {
        "docker-compose.yml": "version: \"3\"\nservices:\n  web:\n    build:\n      context: ./web\n"
                              "      args:\n        MSG: from-compose\n    image: compose-built:1\n"
                              "    command: [\"sh\", \"-c\", \"cat /msg && sleep 1\"]\n",
        "web/Dockerfile": "FROM busybox\nARG MSG=default\nRUN echo \"$MSG\" > /msg\n"})
    project = f"nwbuild{tmp_path.name[-6:].lower().replace('_', '')}"

    def compose(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/usr/bin/docker-compose", "-p", project, *args], cwd=tmp_path,
                              env=dockerd.daemon.docker_env(), capture_output=True, text=True, timeout=300)

    built = compose("build")
    assert built.returncode == 0, built.stderr
    assert "Successfully tagged compose-built:1" in built.stdout + built.stderr
    try:
        up = compose("up", "--build", "--exit-code-from", "web")
        assert up.returncode == 0, up.stderr
        assert "from-compose" in up.stdout
    finally:
        compose("down", "--rmi", "all")


def test_add_url_and_copy_heredoc(dockerd: DockerDaemon, tmp_path: Path) -> None:
    served = tmp_path / "served"
    served.mkdir()
    (served / "payload.txt").write_text("downloaded\n")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        ctx = write(tmp_path / "ctx", {"Dockerfile": (
            f"FROM busybox\nADD {url}/payload.txt /srv/\n"
            "COPY <<EOF /etc/greeting\nhello from a heredoc\nEOF\n"
            "RUN stat -c '%a' /srv/payload.txt && cat /srv/payload.txt /etc/greeting\n")})
        out = build(dockerd, ctx, "-t", "remote:1").stdout
        assert "600\ndownloaded\nhello from a heredoc" in out
        assert steps_using_cache(build(dockerd, ctx, "-t", "remote:1").stdout) == 3  # same content: cached
        (served / "payload.txt").write_text("changed\n")
        assert "changed" in build(dockerd, ctx, "-t", "remote:1").stdout
        missing = build(dockerd, write(tmp_path / "bad", {"Dockerfile": f"FROM busybox\nADD {url}/nope /x\n"}),
                        check=False)
        assert missing.returncode != 0 and "failed to GET" in missing.stderr and "404" in missing.stderr
    finally:
        server.shutdown()
        server.server_close()
        dockerd.docker("rmi", "remote:1", check=False)


def test_build_cancel_by_id(dockerd: DockerDaemon) -> None:
    context = tar_of([file_member("Dockerfile", b"FROM busybox\nRUN sleep 300\n")])
    answer: dict[str, Any] = {}

    def client() -> None:
        answer["status"], answer["body"] = post_build(dockerd, "buildid=cancel-me&nocache=1", context)

    thread = threading.Thread(target=client)
    thread.start()
    try:
        assert eventually(lambda: dockerd.docker("ps", "-q").stdout.strip() != "", timeout=60)
        conn = _UnixConnection(dockerd.daemon.docker_socket)
        conn.request("POST", "/v1.45/build/cancel?id=cancel-me")
        assert conn.getresponse().status == 200
        conn.close()
    finally:
        thread.join(timeout=60)
    assert answer["status"] == 200 and "context canceled" in answer["body"]
    assert eventually(lambda: dockerd.docker("ps", "-aq").stdout.strip() == "", timeout=60)
    status, body = post_build(dockerd, "", b"")  # an empty body is no context
    assert status == 400


def test_copy_follows_symlinked_directories_of_the_image(dockerd: DockerDaemon, tmp_path: Path) -> None:
    ctx = write(tmp_path, {"Dockerfile": (
        "FROM busybox\nRUN mkdir -p /real && ln -s /real /lnk && mkdir -m 0700 /keep\n"
        "COPY f.txt /lnk/\nCOPY tree/ /lnk/\nCOPY f.txt /keep/\n"
        "RUN test -L /lnk && ls /real && stat -c '%a' /keep\n"), "f.txt": "f", "tree/sub/g.txt": "g"})
    out = build(dockerd, ctx, "--no-cache").stdout
    assert "f.txt\nsub\n700" in out  # into the link's target; the link and the existing dir's mode stay


def test_network_add_host_and_image_events(dockerd: DockerDaemon, tmp_path: Path) -> None:
    since = str(int(time.time()) - 1)
    ctx = write(tmp_path, {"Dockerfile": (
        "FROM busybox\nRUN grep -q 'myhost' /etc/hosts && grep -q 10.1.2.3 /etc/hosts\n"
        "RUN ls /sys/class/net > /nets\n")})
    out = build(dockerd, ctx, "--network", "none", "--add-host", "myhost:10.1.2.3", "--no-cache",
                "-t", "events:1").stdout
    image_id = json.loads(dockerd.out("image", "inspect", "events:1"))[0]["Id"]
    assert run_output(dockerd, "events:1", "cat", "/nets").split() == ["lo"]  # no interface but loopback
    assert "Successfully tagged events:1" in out
    events = dockerd.out("events", "--since", since, "--until", str(int(time.time()) + 1), "--filter", "type=image",
                         "--format", "{{.Action}} {{.Actor.ID}} {{index .Actor.Attributes \"name\"}}").splitlines()
    assert f"create {image_id} {image_id}" in events
    assert f"tag {image_id} events:1" in events
    dockerd.docker("rmi", "events:1")
