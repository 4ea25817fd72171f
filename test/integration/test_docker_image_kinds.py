"""Every image path with images of both media-type families and both layer encodings (test/lib/images.py's
IMAGE_KINDS: OCI and Docker schema 2, gzip and plain tar layers), through the real docker CLI: pull, run,
history, commit, push (the registry's manifest keeps one family of media types), pull back by name, save,
load, export and import.  Docker Hub serves mostly schema 2 images, which the other image tests do not use.
"""
from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lib.docker import DockerDaemon, docker_daemon
from lib.images import IMAGE_KINDS, is_docker_media, push_kind
from lib.leaks import leftovers
from lib.registry import Registry

ACCEPT = ", ".join(("application/vnd.docker.distribution.manifest.v2+json",
                    "application/vnd.oci.image.manifest.v1+json"))


@pytest.fixture(scope="module")
def dd(registry: Registry) -> Iterator[DockerDaemon]:
    yield from docker_daemon(registry)


def registry_manifest(registry: Registry, repo: str, tag: str) -> dict[str, Any]:
    req = urllib.request.Request(f"http://{registry.host}/v2/{repo}/manifests/{tag}", headers={"Accept": ACCEPT})
    with urllib.request.urlopen(req, timeout=30) as resp:
        manifest: dict[str, Any] = json.loads(resp.read())
        return manifest


def assert_one_family(manifest: dict[str, Any], docker_media: bool) -> None:
    """A manifest's own type, its config's and every layer's belong to the same family (OCI or Docker)."""
    types = [manifest["mediaType"], manifest["config"]["mediaType"], *(lay["mediaType"] for lay in manifest["layers"])]
    assert [is_docker_media(t) for t in types] == [docker_media] * len(types), types


def run_out(dd: DockerDaemon, image: str, *cmd: str) -> str:
    """A container's stdout; without --rm, whose fast exit can still lose output (issue 13, another fix)."""
    proc = dd.docker("run", "--name", "kind-run", image, *cmd, check=False)
    dd.docker("rm", "-f", "kind-run", check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def pipe(dd: DockerDaemon, *args: str, input_: bytes | None = None) -> bytes:
    proc = subprocess.run(["docker", *args], env=dd.daemon.docker_env(), capture_output=True, timeout=120,
                          input=input_)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("kind", list(IMAGE_KINDS))
def test_every_image_path(dd: DockerDaemon, registry: Registry, tmp_path: Path, kind: str) -> None:
    docker_media = bool(IMAGE_KINDS[kind].get("docker_media"))
    built = push_kind(registry.host, f"library/kind-{kind}", kind)
    assert is_docker_media(built.manifest.media_type) == docker_media
    ctr = f"kind-{kind}-ctr"
    committed = f"kind-{kind}-commit"
    pushed = f"{registry.host}/kinds/{kind}-commit"
    try:
        # pull, inspect, history, run
        dd.out("pull", f"kind-{kind}")
        [image] = json.loads(dd.out("image", "inspect", f"kind-{kind}"))
        assert image["Id"] == built.config.digest
        assert image["RootFS"]["Layers"] == built.diff_ids
        assert image["Config"]["Labels"] == {"narwhal.test.kind": kind}
        assert dd.out("history", "--format", "{{.CreatedBy}}", f"kind-{kind}") == "hack/mkimage.py busybox layer 0"

        # commit: a new layer (with a whiteout) on top of the pulled one, runnable at once
        dd.out("run", "--name", ctr, f"kind-{kind}", "sh", "-c", f"echo {kind} > /greeting && rm /bin/true")
        image_id = dd.out("commit", "-c", 'CMD ["cat", "/greeting"]', ctr, committed)
        [after] = json.loads(dd.out("image", "inspect", committed))
        assert after["Id"] == image_id and after["RootFS"]["Layers"][:-1] == built.diff_ids
        assert dd.out("history", "-q", "--no-trunc", committed).splitlines() == [image_id, built.config.digest]
        assert run_out(dd, committed) == kind
        assert dd.docker("run", "--rm", committed, "ls", "/bin/true", check=False).returncode != 0

        # push: the registry gets a manifest of one family, the parent's
        dd.out("tag", committed, pushed)
        dd.out("push", pushed)
        manifest = registry_manifest(registry, f"kinds/{kind}-commit", "latest")
        assert_one_family(manifest, docker_media)
        assert len(manifest["layers"]) == 2
        assert manifest["layers"][0]["digest"] == built.layers[0].digest  # the parent's blob, as pulled

        # pull back by name after removing everything local
        dd.out("rmi", pushed, committed)
        dd.out("pull", pushed)
        assert dd.out("image", "inspect", "--format", "{{.Id}}", pushed) == image_id
        assert run_out(dd, pushed) == kind

        # save, rmi, load: same ID, still runs
        archive = pipe(dd, "save", pushed)
        dd.out("rmi", pushed)
        assert dd.docker("image", "inspect", image_id, check=False).returncode != 0
        loaded = pipe(dd, "load", input_=archive).decode()
        assert pushed in loaded
        assert dd.out("image", "inspect", "--format", "{{.Id}}", pushed) == image_id
        assert run_out(dd, pushed) == kind

        # export the container, import the filesystem as a one-layer image
        exported = pipe(dd, "export", ctr)
        imported = f"kind-{kind}-import"
        pipe(dd, "import", "-c", 'CMD ["cat", "/greeting"]', "-", imported, input_=exported)
        assert run_out(dd, imported) == kind
        assert len(json.loads(dd.out("image", "inspect", imported))[0]["RootFS"]["Layers"]) == 1
    finally:
        dd.rm_all()
        dd.docker("rmi", "-f", f"kind-{kind}", committed, pushed, f"kind-{kind}-import", check=False)
    assert leftovers(dd.daemon) == {}
