"""A local Docker registry serving a `hello-world:latest` image, for tests that must not reach Docker Hub.

The image is test data standing in for Docker Hub's hello-world image: one layer holding Debian's
static busybox at /bin/busybox, linux/amd64, whose default command prints the same two first lines
as the real one ("Hello from Docker!" and "This message shows that your installation appears to be
working correctly."). It is written in `docker save` (docker-archive) format with tarfile, json and
hashlib only, so no Docker daemon is needed to build it.

The registry is Debian's `docker-registry` (package docker-registry) on a free loopback port, with
filesystem storage in a work directory and no auth; Debian's `skopeo` (package skopeo) pushes the
archive into it as `library/hello-world:latest`. The static busybox comes from package busybox-static.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from provisioner.local.vm import free_loopback_port
from tests.conftest import require_tool

IMAGE_NAME = "hello-world:latest"
REPOSITORY = "library/hello-world"
TAG = "latest"
HELLO = "Hello from Docker!\nThis message shows that your installation appears to be working correctly.\n"
CMD = [
    "/bin/busybox",
    "sh",
    "-c",
    "echo 'Hello from Docker!'; echo 'This message shows that your installation appears to be working correctly.'",
]
ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
CREATED = "2023-05-02T16:49:27Z"  # fixed, so the archive is byte-for-byte reproducible


@dataclass(frozen=True)
class RegistryTools:
    busybox: Path  # a statically linked busybox
    registry: str  # docker-registry
    skopeo: str


def is_static_elf(path: Path) -> bool:
    """Whether PATH is an ELF64 little-endian executable without a program interpreter (PT_INTERP)."""
    with path.open("rb") as f:
        header = f.read(64)
        if len(header) < 64 or header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            return False
        (phoff,) = struct.unpack_from("<Q", header, 0x20)
        phentsize, phnum = struct.unpack_from("<HH", header, 0x36)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))  # 3: PT_INTERP


def require_registry_tools() -> RegistryTools:
    """The three tools, each missing one skipping the test locally and failing it in CI (require_tool)."""
    found = shutil.which("busybox")
    busybox = Path(found).resolve() if found else None
    if busybox is None or not is_static_elf(busybox):
        require_tool("busybox-static")  # no such command: skips or fails with the package's name
        raise AssertionError("unreachable")  # pragma: no cover
    return RegistryTools(busybox=busybox, registry=require_tool("docker-registry"), skopeo=require_tool("skopeo"))


def _add_bytes(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    archive.addfile(info, io.BytesIO(data))


def _write_layer(out: IO[bytes], busybox: Path) -> None:
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as layer:
        directory = tarfile.TarInfo("bin")
        directory.type = tarfile.DIRTYPE
        directory.mode = 0o755
        layer.addfile(directory)
        binary = tarfile.TarInfo("bin/busybox")
        binary.size = busybox.stat().st_size
        binary.mode = 0o755
        with busybox.open("rb") as f:
            layer.addfile(binary, f)


def build_hello_world_archive(path: Path, busybox: Path) -> Path:
    """Write the hello-world test image to PATH as a `docker save` archive (loadable by `docker load`)."""
    layer_buffer = io.BytesIO()
    _write_layer(layer_buffer, busybox)
    layer = layer_buffer.getvalue()
    diff_id = hashlib.sha256(layer).hexdigest()
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "config": {"Env": ENV, "Cmd": CMD, "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{diff_id}"]},
        "history": [
            {"created": CREATED, "created_by": "COPY busybox /bin/busybox"},
            {"created": CREATED, "created_by": f"CMD {json.dumps(CMD)}", "empty_layer": True},
        ],
    }
    config_bytes = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    layer_name = f"{diff_id}/layer.tar"
    manifest = [{"Config": config_name, "RepoTags": [IMAGE_NAME], "Layers": [layer_name]}]
    with tarfile.open(path, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _add_bytes(archive, config_name, config_bytes)
        _add_bytes(archive, layer_name, layer)
        _add_bytes(archive, "manifest.json", json.dumps(manifest).encode())
    return path


def _registry_config(storage: Path, port: int) -> str:
    # JSON is YAML; the keys are those of distribution 2.8 (Debian 12's docker-registry).
    return json.dumps(
        {
            "version": "0.1",
            "log": {"level": "warn", "accesslog": {"disabled": True}},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
            "http": {"addr": f"127.0.0.1:{port}", "secret": "local-test-registry"},
        },
        indent=2,
    )


def _answers(url: str) -> bool:
    try:
        # No proxy: an http_proxy in the environment must not intercept loopback.
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(url, timeout=1) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


@contextlib.contextmanager
def running_registry(registry: str, workdir: Path, seconds: float = 15.0) -> Iterator[str]:
    """Run docker-registry on a free loopback port until the block ends; yields its address `127.0.0.1:PORT`."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_loopback_port()
    config = workdir / "registry.yml"
    config.write_text(_registry_config(workdir / "storage", port))
    log_path = workdir / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [registry, "serve", str(config)], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + seconds
        while not _answers(f"http://127.0.0.1:{port}/v2/"):
            if process.poll() is not None or time.monotonic() > deadline:
                state = "exited" if process.poll() is not None else f"did not answer in {seconds}s"
                raise AssertionError(f"docker-registry {state}:\n{log_path.read_text(errors='replace')}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def push_archive(skopeo: str, archive: Path, address: str, workdir: Path) -> None:
    """Copy the docker-archive ARCHIVE to ADDRESS/library/hello-world:latest over plain http."""
    # --insecure-policy: no /etc/containers/policy.json is needed (Debian ships one, but a host may not).
    # TMPDIR: skopeo unpacks the archive into a temp dir, kept inside WORKDIR.
    tmp = workdir / "skopeo-tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            skopeo,
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            f"docker-archive:{archive}",
            f"docker://{address}/{REPOSITORY}:{TAG}",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={**os.environ, "TMPDIR": str(tmp), "NO_PROXY": "127.0.0.1", "no_proxy": "127.0.0.1"},
    )
    assert result.returncode == 0, f"skopeo copy failed ({result.returncode}):\n{result.stdout}{result.stderr}"


@contextlib.contextmanager
def hello_world_registry(workdir: Path) -> Iterator[str]:
    """A running local registry holding library/hello-world:latest; yields its address `127.0.0.1:PORT`.

    Skips the test (fails it in CI) when busybox-static, docker-registry or skopeo is missing.
    Pull it as `ADDRESS/library/hello-world:latest` (plain http: an insecure registry).
    """
    tools = require_registry_tools()
    workdir.mkdir(parents=True, exist_ok=True)
    archive = build_hello_world_archive(workdir / "hello-world.tar", tools.busybox)
    with running_registry(tools.registry, workdir / "registry") as address:
        push_archive(tools.skopeo, archive, address, workdir)
        yield address
