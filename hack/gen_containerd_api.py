#!/usr/bin/env python3
"""Generate containerd's gRPC Python stubs from the .proto files Debian ships.

containerd's protos carry gogoproto options and Go import paths
(``github.com/containerd/containerd/api/...``), neither of which protoc's
Python generator can use.  We copy the files into a scratch tree, drop the
gogo options, rewrite the imports to ``pkg/containerd/api/...`` so the
generated modules import each other as ``pkg.containerd.api...``, and run
grpcio-tools.  The output is git-ignored: it is a build product.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

SRC = Path("/usr/share/gocode/src/github.com/containerd/containerd")
GO_PREFIX = "github.com/containerd/containerd/"
PY_PREFIX = "pkg/containerd/api/"

# (path under SRC, path under the generated package)
PROTOS = [
    "api/types/descriptor.proto",
    "api/types/metrics.proto",
    "api/types/mount.proto",
    "api/types/platform.proto",
    "api/types/task/task.proto",
    "api/events/container.proto",
    "api/events/content.proto",
    "api/events/image.proto",
    "api/events/namespace.proto",
    "api/events/snapshot.proto",
    "api/events/task.proto",
    "api/services/containers/v1/containers.proto",
    "api/services/content/v1/content.proto",
    "api/services/diff/v1/diff.proto",
    "api/services/events/v1/events.proto",
    "api/services/images/v1/images.proto",
    "api/services/leases/v1/leases.proto",
    "api/services/namespaces/v1/namespace.proto",
    "api/services/snapshots/v1/snapshots.proto",
    "api/services/tasks/v1/tasks.proto",
    "api/services/version/v1/version.proto",
    "runtime/v2/runc/options/oci.proto",
    "runtime/v2/task/shim.proto",
]

_WEAK_IMPORT = re.compile(r'^\s*import\s+weak\s+"[^"]+";\s*$', re.M)
_FILE_OPTION = re.compile(r"^\s*option\s+\([^)]*\)[^;]*;\s*$", re.M)
_FIELD_OPTIONS = re.compile(r"\s*\[\s*\((?:gogoproto|containerd)[^\]]*\]", re.S)


def clean(text: str) -> str:
    """Strip gogo/containerd plugin options and rewrite Go import paths."""
    text = _WEAK_IMPORT.sub("", text)
    text = _FILE_OPTION.sub("", text)
    text = _FIELD_OPTIONS.sub("", text)
    return text.replace(f'import "{GO_PREFIX}', f'import "{PY_PREFIX}')


def generate(out_root: Path, src: Path = SRC) -> None:
    import grpc_tools
    from grpc_tools import protoc  # imported late: only needed at setup

    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        targets = []
        for rel in PROTOS:
            source = src / rel
            if not source.exists():
                sys.exit(f"missing {source}: install golang-github-containerd-containerd-dev")
            dest = scratch / PY_PREFIX / rel.removeprefix("api/")
            if rel.startswith("runtime/"):
                dest = scratch / PY_PREFIX / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(clean(source.read_text()))
            targets.append(str(dest.relative_to(scratch)))
        # Imports inside the protos point at api/... ; mirror the layout.
        for proto in (scratch / PY_PREFIX).rglob("*.proto"):
            proto.write_text(proto.read_text().replace(f'"{PY_PREFIX}api/', f'"{PY_PREFIX}'))
        include = Path(grpc_tools.__file__).parent / "_proto"
        gen = scratch / "out"
        gen.mkdir()
        rc = protoc.main([
            "protoc", f"-I{scratch}", f"-I{include}",
            f"--python_out={gen}", f"--pyi_out={gen}", f"--grpc_python_out={gen}",
            *targets,
        ])
        if rc != 0:
            sys.exit(f"protoc failed with {rc}")
        api_out = out_root / PY_PREFIX
        if api_out.exists():
            shutil.rmtree(api_out)
        shutil.copytree(gen / PY_PREFIX, api_out)
        for directory in [api_out, *[p for p in api_out.rglob("*") if p.is_dir()]]:
            (directory / "__init__.py").touch()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent,
                        help="repository root (the stubs go to pkg/containerd/api)")
    parser.add_argument("--src", type=Path, default=SRC)
    args = parser.parse_args()
    generate(args.out, args.src)
    print(f"generated containerd stubs in {args.out / PY_PREFIX}")


if __name__ == "__main__":
    main()
