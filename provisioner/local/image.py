"""Boot images for the local VM: a Debian 13 image that boots as on GCE, built with debootstrap, or Ubuntu's."""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from provisioner.access.ssh import Progress
from provisioner.errors import CourseVmError, MissingPrerequisiteError
from provisioner.files import foreign_symlink
from provisioner.local.private import private_directory, private_file, private_files
from provisioner.local.process import require, run_tool
from provisioner.paths import cache_home

DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBIAN_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
"""What debootstrap checks the archive's Release signature against (debian-archive-keyring; Debian
12's has trixie's keys). The mirror is plain http: this signature is all that vouches for the packages."""
DEBIAN_SUITE = "trixie"
DEBIAN_RELEASE = 13
# What a GCE image has, as far as the course needs: cloud-init (25.1, with its GCE datasource) and
# Google's guest agent, a DHCP client for cloud-init's GCE local stage, resize2fs for its resizefs;
# python3-cffi-backend, without which debootstrap leaves cloud-init unconfigured.
DEBIAN_PACKAGES = (
    "linux-image-cloud-amd64",
    "systemd-sysv",
    "cloud-init",
    "python3-cffi-backend",
    "google-guest-agent",
    "openssh-server",
    "udev",
    "ifupdown",
    "dhcpcd-base",
    "iproute2",
    "e2fsprogs",
    "ca-certificates",
    "sudo",
    "curl",
    "locales",
    "dbus",
    # The VM's own hostname resolves (sudo looks it up), as GCE's images make it.
    "libnss-myhostname",
)
GCE_HOSTS = "169.254.169.254 metadata.google.internal metadata\n"
"""GCE images resolve the metadata server by name in /etc/hosts; cloud-init's GCE datasource asks for it by name."""
# GCE names an attached disk /dev/disk/by-id/google-DEVICE_NAME (its images carry this rule, from
# Google's guest-configs, which Debian does not package); QEMU gives the disk DEVICE_NAME as its serial.
GCE_DISK_RULE = (
    "# course-vm: /dev/disk/by-id/google-NAME for a virtio disk whose serial is NAME, as GCE names its disks.\n"
    'KERNEL=="vd*", ENV{DEVTYPE}=="disk", ENV{ID_SERIAL}=="?*", SYMLINK+="disk/by-id/google-$env{ID_SERIAL}"\n'
)
DEBIAN_DISK_SIZE = "20G"  # sparse: only what is written takes space
IMAGE_RECIPE_VERSION = "4"  # bump when the build below changes, so cached images are rebuilt

GCE_MARKER = "gce"
"""A file in a built image's directory: the image boots as on GCE."""
MANIFEST = "manifest"
"""A file in a baked image's directory: what the image holds (recipe.user_data.image_manifest)."""

UBUNTU_RELEASE_URL = "https://cloud-images.ubuntu.com/releases/noble/release"
UBUNTU_IMAGE = "ubuntu-24.04-server-cloudimg-amd64.img"
UBUNTU_KEYRING = Path("/usr/share/keyrings/ubuntu-cloudimage-keyring.gpg")
"""Ubuntu's cloud image signing key (UEC Image Automatic Signing Key, D2EB44626FDDC30B513D5BB71A5D6C4C7DB87C81),
as the ubuntu-keyring package ships it: what vouches for SHA256SUMS, and so for the image."""


@dataclass(frozen=True)
class Image:
    """A bootable disk: booted by its own boot loader, or (kernel and initrd set) directly by QEMU."""

    disk: Path
    format: str
    kernel: Path | None = None
    initrd: Path | None = None
    gce: bool = False
    """It boots as a GCE image does: cloud-init's GCE datasource and Google's guest agent, from a
    metadata server. Otherwise it gets its recipe from a NoCloud seed."""
    manifest: str | None = None
    """What a baked image (`local image bake`) holds, as its bake wrote it; None for an image not baked."""

    def qemu_boot_args(self) -> list[str]:
        if self.kernel is None or self.initrd is None:
            return []
        return ["-kernel", str(self.kernel), "-initrd", str(self.initrd), "-append", "root=/dev/vda rw console=ttyS0"]


def cache_dir() -> Path:
    """Where images are kept between runs: $XDG_CACHE_HOME/course-vm/images."""
    return cache_home() / "images"


def sudo_user() -> tuple[int, int, Path] | None:
    """The user who ran this under `sudo` (their uid, gid and home), or None when root runs it as root
    or no root runs it: `sudo local image build` builds for them, not for root."""
    name, uid, gid = (os.environ.get(key, "") for key in ("SUDO_USER", "SUDO_UID", "SUDO_GID"))
    if os.geteuid() != 0 or not name or name == "root" or not uid.isdigit() or not gid.isdigit():
        return None
    try:
        return int(uid), int(gid), Path(pwd.getpwnam(name).pw_dir)
    except KeyError:
        return None


def image_at(path: Path) -> Image:
    """The image at PATH: a directory from `local image build`, or a disk image file.

    Raises CourseVmError when PATH is neither.
    """
    if path.is_dir():
        disk, kernel, initrd = path / "disk.img", path / "vmlinuz", path / "initrd.img"
        if not all(p.is_file() for p in (disk, kernel, initrd)):
            raise CourseVmError(f"{path} is not an image built by `local image build` (disk.img, vmlinuz, initrd.img)")
        # Built by an earlier course-vm (Debian 12, NoCloud) if it has no marker. A baked one's disk is qcow2.
        baked = path / MANIFEST
        manifest = baked.read_text().strip() if baked.is_file() else None
        disk_format = "qcow2" if _magic(disk) == QCOW2_MAGIC else "raw"
        if disk_format == "qcow2":
            refuse_other_files(disk, "--image")
        return Image(disk, disk_format, kernel, initrd, gce=(path / GCE_MARKER).is_file(), manifest=manifest)
    if path.is_file():
        if _magic(path) != QCOW2_MAGIC:
            return Image(path, "raw")  # QEMU reads a raw disk as bytes: it names no other file
        refuse_other_files(path, "--image")
        return Image(path, "qcow2")
    raise CourseVmError(f"image {path} does not exist. Fix: `course-vm local image build`, or omit --image")


QCOW2_MAGIC = b"QFI\xfb"


def _magic(path: Path) -> bytes:
    with path.open("rb") as file:
        return file.read(4)


def refuse_other_files(path: Path, option: str) -> None:
    """Raise CourseVmError unless the qcow2 disk at PATH (given as OPTION) is self-contained.

    A qcow2 file may name a backing file, which the guest then reads, or an external data file,
    which it reads and writes: a disk handed to course-vm must not reach other files of this machine.
    """
    result = subprocess.run(
        [require("qemu-img", "qemu-utils"), "info", "-U", "--output=json", str(path)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    try:
        info = json.loads(result.stdout) if result.returncode == 0 else None
    except ValueError:
        info = None
    if not isinstance(info, dict):
        reason = (result.stderr.strip().splitlines() or ["no answer"])[-1]
        raise CourseVmError(
            f"{option} {path} is not a disk image qemu-img can read ({reason}). Fix: give a qcow2 or raw disk image"
        )
    data = info.get("format-specific", {}).get("data", {})
    other = info.get("full-backing-filename") or info.get("backing-filename") or data.get("data-file")
    if other:
        raise CourseVmError(
            f"{option} {path} reads another file, {other}, which the VM could then read or write. Fix: give a "
            f"self-contained copy: `qemu-img convert -O qcow2 {path} NEW.qcow2`"
        )


def build_debian_image(
    progress: Progress, mirror: str = DEBIAN_MIRROR, cache: Path | None = None, keyring: Path = DEBIAN_KEYRING
) -> Image:
    """Build (or reuse from the cache) a Debian 13 image that boots as a GCE image does, from packages
    whose archive signature KEYRING verifies.

    Needs root and Debian's debootstrap, e2fsprogs and debian-archive-keyring. Raises CourseVmError
    without root, MissingPrerequisiteError when a package is missing, LocalToolError when a build step fails.
    """
    owner = sudo_user() if cache is None else None
    if owner:
        # Under sudo HOME is root's: the image goes where the user's own `local up` looks, and is theirs.
        cache = Path(os.environ.get("XDG_CACHE_HOME") or owner[2] / ".cache") / "course-vm" / "images"
        # Root follows no symlink the user made: it would chmod and chown whatever that names.
        planted = foreign_symlink(cache.absolute(), {0})
        if planted:
            raise CourseVmError(
                f"the image cache {cache} goes through {planted[0]}, a symlink of uid {planted[1]}, which a build "
                "under sudo does not follow (it would chmod and chown what it names). Fix: replace the symlink with "
                "a folder, or build without sudo as root"
            )
    key = hashlib.sha256(json.dumps([IMAGE_RECIPE_VERSION, DEBIAN_SUITE, mirror, DEBIAN_PACKAGES]).encode())
    target = (cache or cache_dir()) / f"debian-{DEBIAN_RELEASE}-{key.hexdigest()[:12]}"
    if (target / "disk.img").is_file():
        progress(f"using the cached image {target}")
        return image_at(target)
    _check_build_tools(keyring)
    made = [path for path in (target.parent, *target.parent.parents) if not path.exists()]
    private_directory(target.parent)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))  # 0700
    try:
        started = time.monotonic()
        _build(work, mirror, keyring, progress)
        # What every VM boots from: for this user only (mkfs and the copies from /boot made them 0644).
        for path in work.iterdir():
            private_file(path)
        if owner:
            for path in [*made, work, *work.iterdir()]:
                os.chown(path, owner[0], owner[1], follow_symlinks=False)
        work.rename(target)
        progress(f"image built in {time.monotonic() - started:.0f}s: {target}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return image_at(target)


def _check_build_tools(keyring: Path) -> None:
    """Raises CourseVmError unless root runs this, MissingPrerequisiteError unless debootstrap, mkfs.ext4 and
    KEYRING are installed."""
    if os.geteuid() != 0:
        raise CourseVmError(
            "building the Debian image needs root (debootstrap). Fix: run "
            '`sudo "$(command -v course-vm)" local image build`, or use the Ubuntu cloud image'
        )
    for tool in ("debootstrap", "mkfs.ext4"):
        if shutil.which(tool) is None:
            raise MissingPrerequisiteError(f"{tool} is not installed. Fix: sudo apt-get install debootstrap e2fsprogs")
    if not keyring.is_file():
        raise MissingPrerequisiteError(
            f"{keyring} is missing: debootstrap could not verify what it downloads. "
            "Fix: sudo apt-get install debian-archive-keyring"
        )


def _build(work: Path, mirror: str, keyring: Path, progress: Progress) -> None:
    """Debootstrap Debian from MIRROR (its archive signature checked against KEYRING) and make WORK its
    image: disk.img, the kernel and initrd to boot it with, and the marker that it boots as on GCE."""
    root = work / "root"
    progress(f"debootstrap {DEBIAN_SUITE} from {mirror} (about two minutes)")
    run_tool(
        [
            "debootstrap",
            # Refuse, not warn, when the Release file's signature cannot be checked.
            "--force-check-gpg",
            f"--keyring={keyring}",
            "--variant=minbase",
            f"--include={','.join(DEBIAN_PACKAGES)}",
            DEBIAN_SUITE,
            str(root),
            mirror,
        ],
        "debootstrap",
    )
    _configure(root, mirror)
    run_tool(["chroot", str(root), "locale-gen"], "locale-gen")
    boot = root / "boot"
    shutil.copy(_newest(boot, "vmlinuz-*"), work / "vmlinuz")
    shutil.copy(_newest(boot, "initrd.img-*"), work / "initrd.img")
    progress("writing the disk image")
    run_tool(
        ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(work / "disk.img"), DEBIAN_DISK_SIZE],
        "mkfs.ext4",
    )
    shutil.rmtree(root)
    (work / GCE_MARKER).write_text("cloud-init's GCE datasource and Google's guest agent\n")


def _configure(root: Path, mirror: str) -> None:
    (root / "etc/fstab").write_text("/dev/vda / ext4 defaults,errors=remount-ro 0 1\n")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" + GCE_HOSTS)
    (root / "etc/cloud/cloud.cfg.d/90-course-vm.cfg").write_text(
        "# course-vm local image: it boots as on GCE, from the metadata server the local VM serves.\n"
        "datasource_list: [ GCE, None ]\n"
    )
    (root / "etc/udev/rules.d").mkdir(parents=True, exist_ok=True)
    (root / "etc/udev/rules.d/65-gce-disk-naming.rules").write_text(GCE_DISK_RULE)
    security = mirror.replace("/debian", "/debian-security") if mirror.endswith("/debian") else None
    sources = f"deb {mirror} {DEBIAN_SUITE} main\ndeb {mirror} {DEBIAN_SUITE}-updates main\n"
    if security:
        sources += f"deb {security} {DEBIAN_SUITE}-security main\n"
    (root / "etc/apt/sources.list").write_text(sources)
    # Every VM makes its own host keys, machine id and (for the guest agent) instance id on first boot.
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (root / "etc/machine-id").write_text("")
    (root / "etc/google_instance_id").unlink(missing_ok=True)
    (root / "etc/hostname").write_text("course-vm\n")
    # cloud-init sets LANG=en_US.UTF-8, which update-locale refuses unless the locale exists; Debian's
    # locale-gen builds only what /etc/locale.gen lists.
    (root / "etc/locale.gen").write_text("en_US.UTF-8 UTF-8\n")


def _newest(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    if not found:
        raise CourseVmError(f"the image has no {pattern} in /boot: debootstrap did not install the kernel")
    return found[-1]


def ubuntu_cloud_image(
    progress: Progress, cache: Path | None = None, release_url: str = UBUNTU_RELEASE_URL, keyring: Path = UBUNTU_KEYRING
) -> Image:
    """Ubuntu 24.04's official cloud image, downloaded once, whose SHA256SUMS Ubuntu's signature
    (a key in KEYRING) vouches for. The image is hashed again on every use, against the signed
    SHA256SUMS kept beside it: a cached file that changed is downloaded again.

    Raises MissingPrerequisiteError when gpgv or the keyring is missing, CourseVmError when the image
    cannot be downloaded, is not signed or does not match.
    """
    if not keyring.is_file():
        raise MissingPrerequisiteError(
            f"{keyring} is missing: Ubuntu's cloud image could not be verified. "
            "Fix: sudo apt-get install ubuntu-keyring (on Debian 12 from bookworm-backports), or build a "
            'Debian image instead: `sudo "$(command -v course-vm)" local image build`'
        )
    if shutil.which("gpgv") is None:
        raise MissingPrerequisiteError("gpgv is not installed. Fix: sudo apt-get install gpgv")
    directory = (cache or cache_dir()).resolve()
    target, sums, signature = (directory / name for name in (UBUNTU_IMAGE, "SHA256SUMS", "SHA256SUMS.gpg"))
    if target.is_file():
        try:
            if _sha256(target) == _signed_sha256(sums, signature, keyring, f"the cached {sums.name}"):
                return Image(private_file(target), "qcow2")  # Ubuntu's own, verified against its signed sums
        except CourseVmError:
            pass  # its sums are gone or no longer verify: download both again
        progress(f"the cached {UBUNTU_IMAGE} does not match its signed SHA256SUMS: downloading it again")
        for path in (target, sums, signature):
            path.unlink(missing_ok=True)
    private_directory(directory)
    parts = [path.with_name(path.name + ".part") for path in (sums, signature, target)]
    try:
        with private_files():
            _download(f"{release_url}/SHA256SUMS", parts[0])
            _download(f"{release_url}/SHA256SUMS.gpg", parts[1])
            expected = _signed_sha256(parts[0], parts[1], keyring, f"{release_url}/SHA256SUMS")
            progress(f"downloading {UBUNTU_IMAGE} (about 600 MB, once)")
            _download(f"{release_url}/{UBUNTU_IMAGE}", parts[2])
        if _sha256(parts[2]) != expected:
            raise CourseVmError(f"{UBUNTU_IMAGE} does not match Ubuntu's SHA256SUMS; it was deleted. Try again")
        for part, path in zip(parts, (sums, signature, target), strict=True):
            part.rename(path)
    finally:
        for part in parts:
            part.unlink(missing_ok=True)
    return Image(target, "qcow2")  # Ubuntu's own, verified against its signed sums


def _download(url: str, path: Path) -> None:
    try:
        with urllib.request.urlopen(url, timeout=60) as response, path.open("wb") as file:  # noqa: S310
            shutil.copyfileobj(response, file, 1 << 20)
    except OSError as error:
        if isinstance(error, urllib.error.HTTPError):
            error.close()  # it holds the response's connection
        raise CourseVmError(
            f"cannot download {url} ({error}). Fix: check the network, or "
            'build a Debian image offline: `sudo "$(command -v course-vm)" local image build`'
        ) from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _signed_sha256(sums: Path, signature: Path, keyring: Path, source: str) -> str:
    """The SHA-256 that SUMS (from SOURCE) gives the Ubuntu image, once SIGNATURE, by a key in KEYRING,
    vouches for SUMS. Raises CourseVmError when it does not, or SUMS does not list the image."""
    if not signature.is_file():
        raise CourseVmError(f"{source} has no signature")
    checked = subprocess.run(
        ["gpgv", "--keyring", str(keyring.resolve()), str(signature), str(sums)],
        capture_output=True,
        text=True,
        check=False,
    )
    if checked.returncode != 0:
        why = " ".join(line.removeprefix("gpgv: ") for line in checked.stderr.strip().splitlines()[-2:])
        raise CourseVmError(
            f"{source} is not signed by a key in {keyring} (gpgv: {why}); nothing was kept. "
            "Fix: try again later; if it persists, the download is being tampered with"
        )
    match = re.search(rf"^([0-9a-f]{{64}}) \*?{re.escape(UBUNTU_IMAGE)}$", sums.read_text(), re.MULTILINE)
    if not match:
        raise CourseVmError(f"{source} does not list {UBUNTU_IMAGE}")
    return match.group(1)
