"""Offline substitutes for the images the real critest (cri-tools v1.29) pulls, pushed under their public paths.

critest pulls ``registry.k8s.io/e2e-test-images/...``, ``gcr.io/k8s-staging-cri-tools/...`` and (its
benchmarks) ``public.ecr.aws/docker/library/...``. With narwhald's ``registry.mirrors`` pointing those
hosts at one local registry, these substitutes answer under the same repository paths. Each is
Debian's busybox (see ``debian_busybox`` and ``busybox_image``) plus what the specs use from the real image:

* pgrep, pkill, ipcs, ipcrm (busybox-static has none): ``critest_tools.c``, a static multi-call binary
  compiled here with gcc;
* nginx / hostnet-nginx: the same binary as ``/usr/sbin/nginx``, writing /var/run/nginx.pid, titled
  "nginx: master process ..." and answering HTTP on 80 (12003 for hostnet-nginx);
* httpd: logs "httpd -D FOREGROUND" and answers HTTP on 80;
* nonewprivs: a setuid-root copy that prints "Effective uid: N";
* test-image-*: busybox variants with the users, groups, tags and distinct layers cri-tools'
  images/ Dockerfiles give them.

Not reproducible offline: ``test-image-digest@sha256:9700f9a2...`` (an upstream digest).
"""
from __future__ import annotations

import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mkimage

TOOLS_SOURCE = Path(__file__).with_name("critest_tools.c")
TOOLS_PATH = "usr/local/bin/critest-tools"
APPLETS = ("pgrep", "pkill", "ipcs", "ipcrm")
K8S = "e2e-test-images"  # under registry.k8s.io
CRI_TOOLS = "k8s-staging-cri-tools"  # under gcr.io
ECR = "docker/library"  # under public.ecr.aws
MIRRORED_HOSTS = ("registry.k8s.io", "gcr.io", "public.ecr.aws", "docker.io")
# Upstream busybox's users and groups that critest's specs name (nobody for RunAsUserName, www-data in the
# test-image-user-* images).
PASSWD = (b"root:x:0:0:root:/root:/bin/sh\nwww-data:x:33:33:www-data:/var/www:/bin/false\n"
          b"nobody:x:65534:65534:nobody:/home:/bin/false\n")
GROUP = b"root:x:0:\nwww-data:x:33:\nnogroup:x:65534:\n"


def build_tools(out_dir: Path) -> Path:
    """Compile critest_tools.c statically (gcc and libc6-dev's libc.a, both in hack/setup.sh's list)."""
    gcc = shutil.which("gcc")
    if gcc is None:
        raise RuntimeError("gcc is needed to build critest's helper programs (apt-get install gcc libc6-dev)")
    binary = out_dir / "critest-tools"
    built = subprocess.run([gcc, "-static", "-Os", "-o", str(binary), str(TOOLS_SOURCE)],
                           capture_output=True, text=True)
    if built.returncode != 0:
        raise RuntimeError(f"cannot build {TOOLS_SOURCE.name}: {built.stderr.strip()[:500]}")
    return binary


def image_with_layer(base: mkimage.Image, layer: mkimage.LayerBuilder, **config: object) -> mkimage.Image:
    """``base`` plus one more layer and container-config overrides (a key set to None is removed)."""
    blob, diff_id = layer.finish(mkimage.OCI_LAYER_GZIP)
    image_config = json.loads(base.config.data)
    image_config["rootfs"]["diff_ids"].append(diff_id)
    image_config["history"].append({"created": image_config["created"], "created_by": "test/lib/critest_images.py"})
    for key, value in config.items():
        if value is None:
            image_config["config"].pop(key, None)
        else:
            image_config["config"][key] = value
    config_blob = mkimage.Blob(mkimage.OCI_CONFIG, json.dumps(image_config, sort_keys=True).encode())
    layers = [*base.layers, blob]
    manifest = {"schemaVersion": 2, "mediaType": mkimage.OCI_MANIFEST, "config": config_blob.descriptor(),
                "layers": [b.descriptor() for b in layers]}
    return mkimage.Image(config_blob, layers, mkimage.Blob(mkimage.OCI_MANIFEST, json.dumps(manifest).encode()),
                         [*base.diff_ids, diff_id])


class _LinkingLayer(mkimage.LayerBuilder):
    """A layer that can also hold hard links (mkimage's busybox uses symlinks)."""

    def hardlink(self, name: str, target: str) -> None:
        name = name.strip("/")
        if "/" in name:
            self.dir(name.rsplit("/", 1)[0])
        info = self._info(name, tarfile.LNKTYPE, 0o755)
        info.linkname = target.strip("/")
        self._tar.addfile(info)


def debian_busybox(work: Path) -> Path:
    """Debian's dynamically linked busybox (package ``busybox``, not ``busybox-static``): its ``sh`` runs
    commands from PATH, as upstream's does. busybox-static's sh runs applets in-process whatever PATH
    holds, so critest's MaskedPaths spec (``sh -c ls`` with /bin/ls masked must say "Permission denied")
    cannot pass on it. Taken from apt's cache, else fetched with ``apt-get download``."""
    cached = sorted(Path("/var/cache/apt/archives").glob("busybox_*_amd64.deb"))
    if not cached:
        subprocess.run(["apt-get", "download", "-q", "busybox"], cwd=work, check=True, capture_output=True)
        cached = sorted(work.glob("busybox_*_amd64.deb"))
    if not cached:
        raise RuntimeError("cannot find or download Debian's busybox package")
    tree = work / "busybox-deb"
    subprocess.run(["dpkg-deb", "-x", str(cached[-1]), str(tree)], check=True)
    return tree / "bin" / "busybox"


def _shared_libs(binary: Path) -> list[Path]:
    """The host's libraries ``binary`` links (ldd), the dynamic loader included."""
    out = subprocess.run(["ldd", str(binary)], check=True, capture_output=True, text=True).stdout
    libs = []
    for line in out.splitlines():
        words = line.split()
        path = words[2] if len(words) >= 3 and words[1] == "=>" else words[0]
        if path.startswith("/"):
            libs.append(Path(path))
    return libs


def busybox_image(busybox: Path) -> mkimage.Image:
    """A busybox image like upstream's: applets as hard links to /bin/busybox (critest's MaskedPaths spec
    masks /bin/ls; a masked symlink would mask its target, /bin/busybox, and every applet with it), the
    shared libraries a dynamic busybox needs, and upstream's users."""
    layer = _LinkingLayer()
    layer.file("bin/busybox", busybox.read_bytes(), 0o755)
    applets = subprocess.run([str(busybox), "--list-full"], check=True, capture_output=True, text=True)
    for path in sorted(set(applets.stdout.split()) - {"bin/busybox"}):
        layer.hardlink(path, "bin/busybox")
    for lib in _shared_libs(busybox):
        layer.file(str(lib), lib.resolve().read_bytes(), 0o755)
    for name, data in (("etc/passwd", PASSWD), ("etc/group", GROUP)):
        layer.file(name, data)
    layer.dir("tmp", 0o1777)
    layer.dir("root", 0o700)
    for name in ("var", "proc", "sys", "dev", "home"):
        layer.dir(name)
    blob, diff_id = layer.finish(mkimage.OCI_LAYER_GZIP)
    config = json.loads(mkimage.build("busybox").config.data)  # mkimage's config, with our one layer
    config["rootfs"]["diff_ids"] = [diff_id]
    config["history"] = [{"created": config["created"], "created_by": "test/lib/critest_images.py busybox"}]
    config_blob = mkimage.Blob(mkimage.OCI_CONFIG, json.dumps(config, sort_keys=True).encode())
    manifest = {"schemaVersion": 2, "mediaType": mkimage.OCI_MANIFEST, "config": config_blob.descriptor(),
                "layers": [blob.descriptor()]}
    return mkimage.Image(config_blob, [blob], mkimage.Blob(mkimage.OCI_MANIFEST, json.dumps(manifest).encode()),
                         [diff_id])


def tools_layer(tools: bytes) -> mkimage.LayerBuilder:
    layer = mkimage.LayerBuilder()
    layer.file(TOOLS_PATH, tools, 0o755)
    for applet in APPLETS:
        layer.symlink(f"usr/bin/{applet}", f"/{TOOLS_PATH}")
    return layer


@dataclass(frozen=True)
class Substitute:
    repository: str  # the path under the mirrored host, e.g. e2e-test-images/busybox
    tags: tuple[str, ...]
    image: mkimage.Image


def substitutes(tools: Path, busybox: Path) -> list[Substitute]:
    """Every image critest v1.29's validation suite and benchmarks pull (but the pinned digest)."""
    code = tools.read_bytes()
    base = image_with_layer(busybox_image(busybox), tools_layer(code))

    def variant(files: dict[str, tuple[bytes, int]], **config: object) -> mkimage.Image:
        layer = mkimage.LayerBuilder()
        for path, (data, mode) in files.items():
            layer.file(path, data, mode)
        return image_with_layer(base, layer, **config)

    nginx = variant({"usr/sbin/nginx": (code, 0o755)}, Entrypoint=["/usr/sbin/nginx"], Cmd=None,
                    ExposedPorts={"80/tcp": {}})
    hostnet_nginx = variant({"usr/sbin/nginx": (code, 0o755)}, Entrypoint=["/usr/sbin/nginx"], Cmd=None,
                            Env=["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                 "CRITEST_HTTP_PORT=12003"])
    httpd = variant({"usr/local/apache2/bin/httpd": (code, 0o755)}, Entrypoint=["/usr/local/apache2/bin/httpd"],
                    Cmd=None, ExposedPorts={"80/tcp": {}})
    nonewprivs = variant({"usr/local/bin/nnp": (code, 0o4755)}, Entrypoint=["/usr/local/bin/nnp"], Cmd=None)
    def user_image(user: str) -> mkimage.Image:
        return variant({}, User=user)

    predefined = variant({
        "etc/passwd": (b"root:x:0:0:root:/root:/bin/sh\ndefault-user:x:1000:1000::/home/default-user:/bin/sh\n"
                       b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n", 0o644),
        "etc/group": (b"root:x:0:\ndefault-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"
                      b"nogroup:x:65534:\n", 0o644),
    }, User="1000")

    def marked(name: str) -> mkimage.Image:
        """images/image-test: busybox plus one file named after the image (distinct images, distinct IDs)."""
        return variant({name: (name.encode() + b"\n", 0o644)})

    result = [
        Substitute(f"{K8S}/busybox", ("1.29-2",), base),
        Substitute(f"{K8S}/nginx", ("1.14-2",), nginx),
        Substitute(f"{K8S}/httpd", ("2.4.39-4", "2.4.38-4"), httpd),
        Substitute(f"{K8S}/nonewprivs", ("1.3",), nonewprivs),
        Substitute(f"{CRI_TOOLS}/hostnet-nginx-amd64", ("latest",), hostnet_nginx),
        Substitute(f"{CRI_TOOLS}/test-image-user-uid", ("latest",), user_image("1002")),
        Substitute(f"{CRI_TOOLS}/test-image-user-username", ("latest",), user_image("www-data")),
        Substitute(f"{CRI_TOOLS}/test-image-user-uid-group", ("latest",), user_image("1003:1004")),
        Substitute(f"{CRI_TOOLS}/test-image-user-username-group", ("latest",), user_image("www-data:1004")),
        Substitute(f"{CRI_TOOLS}/test-image-predefined-group", ("latest",), predefined),
        Substitute(f"{CRI_TOOLS}/test-image-latest", ("latest",), marked("test-image-latest")),
        Substitute(f"{CRI_TOOLS}/test-image-tag", ("test",), marked("test-image-tag-test")),
        Substitute(f"{CRI_TOOLS}/test-image-tag", ("all",), marked("test-image-tag-all")),
        Substitute(f"{CRI_TOOLS}/test-image-tags", ("1", "2", "3"), marked("test-image-tags")),
        *(Substitute(f"{CRI_TOOLS}/test-image-{i}", ("latest",), marked(f"test-image-{i}")) for i in (1, 2, 3)),
        Substitute("pause", ("3.9",), mkimage.build("pause")),
        Substitute("library/pause", ("latest",), mkimage.build("pause")),  # hack/bench's containerd sandbox_image
        Substitute("library/busybox", ("latest", "1.36"), base),
        Substitute(f"{ECR}/busybox", ("1.35.0-glibc", "1-uclibc", "1", "1-glibc", "1-musl", "latest"), base),
    ]
    return result


def push_all(registry_host: str, tools: Path | None = None) -> list[str]:
    """Build and push every substitute to ``registry_host``; returns the ``repository:tag`` names pushed."""
    with tempfile.TemporaryDirectory(prefix="critest-tools-") as tmp:
        binary = tools or build_tools(Path(tmp))
        client = mkimage.RegistryClient(registry_host)
        pushed = []
        for sub in substitutes(binary, debian_busybox(Path(tmp))):
            for tag in sub.tags:
                client.push_image(sub.repository, tag, sub.image)
                pushed.append(f"{sub.repository}:{tag}")
        return pushed


def mirrors_config(registry_host: str) -> str:
    """narwhald's ``registry.mirrors`` sending every public host critest names to the local registry."""
    lines = "".join(f'    {host}: ["http://{registry_host}"]\n' for host in MIRRORED_HOSTS)
    return f"registry:\n  mirrors:\n{lines}"
