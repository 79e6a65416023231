"""Local VM images: recognising them, the cache, the Debian build's configuration, the Ubuntu download."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import pytest

from provisioner.errors import CourseVmError, MissingPrerequisiteError
from provisioner.local import image as local_image
from provisioner.local import vm as local_vm
from provisioner.local.image import UBUNTU_IMAGE, build_debian_image, image_at, ubuntu_cloud_image
from provisioner.local.private import private_directory
from tests.conftest import require_tool
from tests.support.serving import serving


def test_a_built_image_directory_boots_its_own_kernel(tmp_path: Path) -> None:
    for name in ("disk.img", "vmlinuz", "initrd.img"):
        (tmp_path / name).write_bytes(b"x")
    image = image_at(tmp_path)
    assert (image.format, image.kernel, image.initrd) == ("raw", tmp_path / "vmlinuz", tmp_path / "initrd.img")
    assert not image.gce, "an image built before Debian 13 boots from a NoCloud seed"
    (tmp_path / "gce").write_text("")
    assert image_at(tmp_path).gce
    assert image.qemu_boot_args() == [
        "-kernel",
        str(tmp_path / "vmlinuz"),
        "-initrd",
        str(tmp_path / "initrd.img"),
        "-append",
        "root=/dev/vda rw console=ttyS0",
    ]


def test_a_disk_image_file_boots_its_own_loader_and_its_format_is_read(tmp_path: Path) -> None:
    qcow2, raw = tmp_path / "cloud.img", tmp_path / "disk.raw"
    subprocess.run([require_tool("qemu-img"), "create", "-q", "-f", "qcow2", str(qcow2), "1M"], check=True)
    raw.write_bytes(b"\0" * 100)
    assert (image_at(qcow2).format, image_at(qcow2).qemu_boot_args()) == ("qcow2", [])
    assert image_at(raw).format == "raw"
    assert not image_at(qcow2).gce and not image_at(raw).gce


@pytest.mark.parametrize("make", ["missing", "incomplete"])
def test_not_an_image_says_how_to_get_one(tmp_path: Path, make: str) -> None:
    path = tmp_path / "image"
    if make == "incomplete":
        path.mkdir()
        (path / "disk.img").write_bytes(b"x")
    with pytest.raises(CourseVmError, match="local image build"):
        image_at(path)


def test_a_cached_image_is_reused_without_building(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("provisioner.local.image.os.geteuid", lambda: 1000)  # a build needs root: none may start
    messages: list[str] = []
    with pytest.raises(CourseVmError, match="needs root"):
        build_debian_image(messages.append, cache=tmp_path)
    assert list(tmp_path.iterdir()) == []
    # What a build leaves in the cache, under the key of this recipe:
    key_dir = _cache_key_dir(tmp_path)
    key_dir.mkdir()
    for name in ("disk.img", "vmlinuz", "initrd.img"):
        (key_dir / name).write_bytes(b"x")
    assert build_debian_image(messages.append, cache=tmp_path).disk == key_dir / "disk.img"
    assert messages == [f"using the cached image {key_dir}"]


def _cache_key_dir(cache: Path) -> Path:
    import json

    key = hashlib.sha256(
        json.dumps(
            [
                local_image.IMAGE_RECIPE_VERSION,
                local_image.DEBIAN_SUITE,
                local_image.DEBIAN_MIRROR,
                local_image.DEBIAN_PACKAGES,
            ]
        ).encode()
    )
    return cache / f"debian-13-{key.hexdigest()[:12]}"


def test_the_debian_root_is_configured_as_a_gce_image_with_fresh_identities(tmp_path: Path) -> None:
    for directory in ("etc/cloud/cloud.cfg.d", "etc/apt", "etc/ssh"):
        (tmp_path / directory).mkdir(parents=True)
    (tmp_path / "etc/ssh/ssh_host_ed25519_key").write_text("build host's key")
    (tmp_path / "etc/machine-id").write_text("0123456789abcdef\n")
    (tmp_path / "etc/google_instance_id").write_text("1234\n")
    local_image._configure(tmp_path, "http://deb.debian.org/debian")
    assert (tmp_path / "etc/fstab").read_text().startswith("/dev/vda / ext4 ")
    assert "datasource_list: [ GCE, None ]" in (tmp_path / "etc/cloud/cloud.cfg.d/90-course-vm.cfg").read_text()
    hosts = (tmp_path / "etc/hosts").read_text().splitlines()
    assert "169.254.169.254 metadata.google.internal metadata" in hosts and "127.0.0.1 localhost" in hosts
    rule = (tmp_path / "etc/udev/rules.d/65-gce-disk-naming.rules").read_text()
    assert 'SYMLINK+="disk/by-id/google-$env{ID_SERIAL}"' in rule
    assert (tmp_path / "etc/apt/sources.list").read_text() == (
        "deb http://deb.debian.org/debian trixie main\ndeb http://deb.debian.org/debian trixie-updates main\n"
        "deb http://deb.debian.org/debian-security trixie-security main\n"
    )
    assert list((tmp_path / "etc/ssh").iterdir()) == []
    assert (tmp_path / "etc/machine-id").read_text() == ""
    assert not (tmp_path / "etc/google_instance_id").exists(), "the guest agent must see a new instance"
    assert (tmp_path / "etc/locale.gen").read_text() == "en_US.UTF-8 UTF-8\n"


@pytest.fixture
def release(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A local stand-in for cloud-images.ubuntu.com's release directory."""
    served = tmp_path / "release"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    with serving(http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)) as port:
        yield f"http://127.0.0.1:{port}", served


@dataclass(frozen=True)
class Signer:
    """A throwaway OpenPGP key standing in for Ubuntu's cloud image signing key."""

    home: Path
    keyring: Path
    """Its public key alone, as the ubuntu-keyring package ships Ubuntu's."""

    def sign(self, path: Path) -> Path:
        signature = path.with_name(path.name + ".gpg")
        signature.unlink(missing_ok=True)
        subprocess.run(
            [
                "gpg",
                "--homedir",
                str(self.home),
                "--batch",
                "--quiet",
                "--detach-sign",
                "-o",
                str(signature),
                str(path),
            ],
            check=True,
        )
        return signature


def _new_signer(home: Path) -> Signer:
    gpg = ["gpg", "--homedir", str(home), "--batch", "--quiet", "--passphrase", ""]
    subprocess.run([*gpg, "--quick-gen-key", "course-vm test <test@example.invalid>", "ed25519", "sign", "never"],
                   check=True)  # fmt: skip
    keyring = home / "keyring.gpg"
    keyring.write_bytes(subprocess.run([*gpg, "--export"], check=True, capture_output=True).stdout)
    return Signer(home, keyring)


@pytest.fixture(scope="module")
def signers() -> Iterator[tuple[Signer, Signer]]:
    """Ubuntu's stand-in key, and another that is not it."""
    require_tool("gpg")
    require_tool("gpgv")
    homes = [Path(tempfile.mkdtemp(prefix="cvm-gpg-")) for _ in range(2)]  # short: gpg-agent's socket is there
    try:
        yield _new_signer(homes[0]), _new_signer(homes[1])
    finally:
        for home in homes:
            subprocess.run(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"], check=False)
            shutil.rmtree(home, ignore_errors=True)


def publish(served: Path, data: bytes, signer: Signer | None) -> None:
    """Put an image, its SHA256SUMS and (signed by SIGNER) SHA256SUMS.gpg where the release server serves them."""
    (served / UBUNTU_IMAGE).write_bytes(data)
    (served / "SHA256SUMS").write_text(f"{'0' * 64} *other.img\n{hashlib.sha256(data).hexdigest()} *{UBUNTU_IMAGE}\n")
    (served / "SHA256SUMS.gpg").unlink(missing_ok=True)
    if signer:
        signer.sign(served / "SHA256SUMS")


IMAGE = b"QFI\xfb" + b"ubuntu" * 1000


def test_ubuntu_image_is_downloaded_once_and_verified_on_every_use(
    release: tuple[str, Path], tmp_path: Path, signers: tuple[Signer, Signer]
) -> None:
    url, served = release
    ubuntu, _ = signers
    publish(served, IMAGE, ubuntu)
    cache = tmp_path / "cache"
    image = ubuntu_cloud_image(print, cache=cache, release_url=url, keyring=ubuntu.keyring)
    assert (image.disk.read_bytes(), image.format) == (IMAGE, "qcow2")
    assert modes(cache) == {".": "0o700", UBUNTU_IMAGE: "0o600", "SHA256SUMS": "0o600", "SHA256SUMS.gpg": "0o600"}
    for name in (UBUNTU_IMAGE, "SHA256SUMS", "SHA256SUMS.gpg"):
        (served / name).unlink()  # offline now: the cached image and its signed sums suffice
    assert ubuntu_cloud_image(print, cache=cache, release_url=url, keyring=ubuntu.keyring).disk == image.disk


def test_a_cached_ubuntu_image_changed_after_its_download_is_downloaded_again(
    release: tuple[str, Path], tmp_path: Path, signers: tuple[Signer, Signer]
) -> None:
    url, served = release
    ubuntu, _ = signers
    publish(served, IMAGE, ubuntu)
    cache = tmp_path / "cache"
    image = ubuntu_cloud_image(print, cache=cache, release_url=url, keyring=ubuntu.keyring)
    image.disk.write_bytes(IMAGE[:-1] + b"!")  # same size: a tampered or corrupted cache
    messages: list[str] = []
    again = ubuntu_cloud_image(messages.append, cache=cache, release_url=url, keyring=ubuntu.keyring)
    assert again.disk.read_bytes() == IMAGE
    assert f"the cached {UBUNTU_IMAGE} does not match its signed SHA256SUMS: downloading it again" in messages


@pytest.mark.parametrize("signed_by", ["another key", "nobody", "tampered sums"])
def test_ubuntu_sums_without_ubuntus_signature_are_refused(
    signed_by: str, release: tuple[str, Path], tmp_path: Path, signers: tuple[Signer, Signer]
) -> None:
    url, served = release
    ubuntu, other = signers
    publish(served, IMAGE, other if signed_by == "another key" else None if signed_by == "nobody" else ubuntu)
    if signed_by == "tampered sums":
        (served / "SHA256SUMS").write_text((served / "SHA256SUMS").read_text().replace("other.img", "other.iso"))
    with pytest.raises(CourseVmError) as raised:
        ubuntu_cloud_image(print, cache=tmp_path / "cache", release_url=url, keyring=ubuntu.keyring)
    message = str(raised.value)
    if signed_by == "nobody":
        assert message.startswith(f"cannot download {url}/SHA256SUMS.gpg (HTTP Error 404")
    else:
        assert message.startswith(f"{url}/SHA256SUMS is not signed by a key in {ubuntu.keyring} (gpgv: ")
    assert "Traceback" not in message
    assert list((tmp_path / "cache").iterdir()) == []


def test_without_ubuntus_keyring_nothing_is_downloaded(release: tuple[str, Path], tmp_path: Path) -> None:
    url, served = release
    publish(served, IMAGE, None)
    with pytest.raises(MissingPrerequisiteError) as raised:
        ubuntu_cloud_image(print, cache=tmp_path / "cache", release_url=url, keyring=tmp_path / "missing.gpg")
    assert str(raised.value) == (
        f"{tmp_path / 'missing.gpg'} is missing: Ubuntu's cloud image could not be verified. "
        "Fix: sudo apt-get install ubuntu-keyring (on Debian 12 from bookworm-backports), or build a "
        'Debian image instead: `sudo "$(command -v course-vm)" local image build`'
    )
    assert not (tmp_path / "cache").exists()


def test_ubuntu_image_that_does_not_match_is_deleted(
    release: tuple[str, Path], tmp_path: Path, signers: tuple[Signer, Signer]
) -> None:
    url, served = release
    ubuntu, _ = signers
    publish(served, IMAGE, ubuntu)
    (served / UBUNTU_IMAGE).write_bytes(b"tampered")
    with pytest.raises(CourseVmError, match="does not match Ubuntu's SHA256SUMS; it was deleted"):
        ubuntu_cloud_image(print, cache=tmp_path / "cache", release_url=url, keyring=ubuntu.keyring)
    assert list((tmp_path / "cache").iterdir()) == []


def modes(root: Path) -> dict[str, str]:
    """The permission bits of ROOT and everything under it, by relative path."""
    return {str(path.relative_to(root)): oct(path.stat().st_mode & 0o777) for path in [root, *sorted(root.rglob("*"))]}


@pytest.fixture
def fake_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The Debian build as root with its tools faked: the commands it runs, in order. debootstrap
    makes a root with a kernel, mkfs.ext4 a world-readable disk (as under umask 022)."""
    commands: list[list[str]] = []

    def run(command: list[str], _name: str) -> None:
        commands.append(command)
        if command[0] == "debootstrap":
            root = Path(command[-2])
            for directory in ("boot", "etc/cloud/cloud.cfg.d", "etc/apt", "etc/ssh"):
                (root / directory).mkdir(parents=True)
            for name in ("vmlinuz-6.12", "initrd.img-6.12"):
                (root / "boot" / name).write_bytes(b"kernel")
                (root / "boot" / name).chmod(0o644)
        elif command[0] == "mkfs.ext4":
            Path(command[-2]).write_bytes(b"disk")
            Path(command[-2]).chmod(0o644)

    monkeypatch.setattr(local_image, "run_tool", run)
    monkeypatch.setattr("provisioner.local.image.os.geteuid", lambda: 0)
    monkeypatch.setattr("provisioner.local.image.shutil.which", lambda tool: f"/usr/sbin/{tool}")
    return commands


def test_a_built_image_and_its_cache_are_the_users_alone(fake_build: list[list[str]], tmp_path: Path) -> None:
    keyring = tmp_path / "debian-archive-keyring.gpg"
    keyring.write_bytes(b"keys")
    image = build_debian_image(print, cache=tmp_path / "cache", keyring=keyring)
    assert image.disk.read_bytes() == b"disk" and image.gce
    found = modes(tmp_path / "cache")
    assert len(found) == 6, found  # the cache, the image's directory, disk.img, vmlinuz, initrd.img, gce
    assert found == {path: "0o700" if path in (".", image.disk.parent.name) else "0o600" for path in found}


def test_debootstrap_verifies_the_archive_against_debians_keyring(fake_build: list[list[str]], tmp_path: Path) -> None:
    keyring = tmp_path / "debian-archive-keyring.gpg"
    keyring.write_bytes(b"keys")
    build_debian_image(print, cache=tmp_path / "cache", keyring=keyring)
    debootstrap = fake_build[0]
    assert debootstrap[0] == "debootstrap"
    # Without both, a host lacking the keyring gets a warning and unverified packages, installed as root.
    assert "--force-check-gpg" in debootstrap and f"--keyring={keyring}" in debootstrap
    assert str(local_image.DEBIAN_KEYRING) == "/usr/share/keyrings/debian-archive-keyring.gpg"


def test_without_debians_keyring_nothing_is_built(fake_build: list[list[str]], tmp_path: Path) -> None:
    with pytest.raises(MissingPrerequisiteError) as raised:
        build_debian_image(print, cache=tmp_path / "cache", keyring=tmp_path / "missing.gpg")
    assert str(raised.value) == (
        f"{tmp_path / 'missing.gpg'} is missing: debootstrap could not verify what it downloads. "
        "Fix: sudo apt-get install debian-archive-keyring"
    )
    assert fake_build == [] and not (tmp_path / "cache").exists()


def as_sudo_by_alice(alice: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`sudo python -m provisioner local image build` by alice (uid 4242, home ALICE): root's HOME, alice's
    SUDO_* variables. Returns the Debian keyring the build is given."""
    monkeypatch.setenv("HOME", str(tmp_path / "root"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("SUDO_USER", "alice")
    monkeypatch.setenv("SUDO_UID", "4242")
    monkeypatch.setenv("SUDO_GID", "4343")
    monkeypatch.setattr("provisioner.local.image.pwd.getpwnam", lambda name: SimpleNamespace(pw_dir=str(alice)))
    keyring = tmp_path / "debian-archive-keyring.gpg"
    keyring.write_bytes(b"keys")
    return keyring


def test_under_sudo_the_image_is_built_into_the_users_cache_and_is_theirs(
    fake_build: list[list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    alice = tmp_path / "home" / "alice"
    alice.mkdir(parents=True)
    keyring = as_sudo_by_alice(alice, tmp_path, monkeypatch)
    image = build_debian_image(print, keyring=keyring)
    assert image.disk.parent.parent == alice / ".cache" / "course-vm" / "images"
    owners = {str(p.relative_to(alice)): (p.stat().st_uid, p.stat().st_gid) for p in alice.rglob("*")}
    assert len(owners) == 8, owners  # .cache, course-vm, images, the image's directory and its 4 files
    assert set(owners.values()) == {(4242, 4343)}
    assert not (tmp_path / "root").exists()


def test_under_sudo_a_symlink_the_user_made_in_the_cache_path_is_not_followed(
    fake_build: list[list[str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # alice points her cache at /etc: root would make it 0700 and hers.
    alice, system = tmp_path / "home" / "alice", tmp_path / "etc"
    (alice / ".cache").mkdir(parents=True)
    system.mkdir(mode=0o755)
    (alice / ".cache" / "course-vm").symlink_to(system)
    os.lchown(alice / ".cache" / "course-vm", 4242, 4343)
    keyring = as_sudo_by_alice(alice, tmp_path, monkeypatch)
    with pytest.raises(CourseVmError, match=r"goes through .*/\.cache/course-vm, a symlink of uid 4242"):
        build_debian_image(print, keyring=keyring)
    assert (system.stat().st_mode & 0o777, system.stat().st_uid) == (0o755, 0)
    assert list(system.iterdir()) == []


def test_a_private_folder_that_is_a_symlink_is_refused_not_chmodded(tmp_path: Path) -> None:
    target = tmp_path / "shared"
    target.mkdir(mode=0o755)
    (tmp_path / "cache").symlink_to(target)
    with pytest.raises(CourseVmError, match="is a symlink"):
        private_directory(tmp_path / "cache")
    assert target.stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("option", ["backing", "data_file"])
def test_a_qcow2_image_or_home_disk_that_reads_another_file_is_refused(
    tmp_path: Path, option: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The guest would read (a backing file) or write (a data file) a host file through it: /etc/shadow, say.
    secret = tmp_path / "host-secret"
    secret.write_bytes(b"root:$6$hash" + b"\0" * 1024)
    disk = tmp_path / "planted.qcow2"
    data_file = ["-o", f"data_file={secret},data_file_raw=on"]
    options = ["-b", str(secret), "-F", "raw"] if option == "backing" else data_file
    subprocess.run([require_tool("qemu-img"), "create", "-q", "-f", "qcow2", *options, str(disk), "1M"], check=True)
    with pytest.raises(CourseVmError, match=f"--image {disk} reads another file, {secret}") as raised:
        image_at(disk)
    assert "qemu-img convert -O qcow2" in str(raised.value)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    with pytest.raises(CourseVmError, match=f"--home-disk {disk} reads another file, {secret}"):
        local_vm.ensure_home_disk(disk, 10)


def test_a_file_that_says_qcow2_but_is_not_one_is_refused(tmp_path: Path) -> None:
    disk = tmp_path / "broken.qcow2"
    disk.write_bytes(b"QFI\xfb" + b"not a qcow2 header" * 10)
    with pytest.raises(CourseVmError, match=f"--image {disk} is not a disk image qemu-img can read"):
        image_at(disk)
