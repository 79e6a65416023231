"""The rules of rows that need more than a pattern: the key path, the mirrors, the SSH ranges, the time zone."""

from __future__ import annotations

import ipaddress
import ntpath
import posixpath
import re
import urllib.parse
import zoneinfo
from collections.abc import Callable
from pathlib import Path, PurePosixPath, PureWindowsPath

from provisioner.paths import ON_WINDOWS
from provisioner.recipe.problems import Problems, set_key
from provisioner.recipe.rules import PATH, Rule, Setting, as_list, check_text

# PATH, or after a drive letter (C:/keys/course-vm), which only Windows reads as one.
_KEY_PATH = re.compile(f"([A-Za-z]:)?(?:{PATH.pattern})")
# On Windows a backslash separates too (C:\Users\Alice Smith\.ssh\course-vm); no other character is
# added, so the path still cannot carry a quote, `%` or `$` (which cmd, PowerShell and ssh expand).
_WINDOWS_KEY_PATH = re.compile(r"([A-Za-z]:)?[A-Za-z0-9_./\\~@+-][A-Za-z0-9_./\\~@+ -]*")
_MIRROR_URL_OR_EMPTY = re.compile(r"|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~/%+-]*)?")


def is_absolute(path: str, *, windows: bool = ON_WINDOWS) -> bool:
    """Whether PATH (after `~` expansion) names the same file whatever the current directory.

    On Windows that takes a drive and a root (`C:\\keys`, `C:/keys`): `\\keys` is relative to
    the current drive and `C:keys` to drive C's current directory.
    """
    if windows:
        windows_path = PureWindowsPath(path)
        return bool(windows_path.drive and windows_path.root)
    return PurePosixPath(path).is_absolute()


def key_path_rule(*, windows: bool) -> Rule:
    """The rule of `sshKeyPath` on Windows or on Linux and macOS: a safe absolute (or `~/`) path, and
    not the `.pub` half of the pair."""
    pattern = _WINDOWS_KEY_PATH if windows else _KEY_PATH
    why = (
        "the path may hold only a drive letter (C:), letters, digits, spaces and ._/\\~@+-"
        if windows
        else "the path may hold only letters, digits, spaces and ._/~@+-"
    )
    expanduser = ntpath.expanduser if windows else posixpath.expanduser

    def rule(problems: Problems, setting: Setting, value: object) -> Path:
        path = check_text(problems, setting.key, value, pattern, why, setting.default)
        expanded = expanduser(path)
        if path.endswith(".pub"):
            private = path[: -len(".pub")]
            # Quoted, for the fix is typed into a shell: a space would split the path in two.
            fix = set_key(setting.key, f'"{private}"' if " " in private else private)
            problems.add(setting.key, path, "it names a public key; the setting is the private key", fix)
        elif path and not is_absolute(expanded, windows=windows):
            # `pulumi up` runs the program in the project directory, which .gitignore does not cover.
            why_relative = (
                "it is a relative path, so the private key would land in whatever directory the command runs in "
                "(under `pulumi up`, the project directory)"
            )
            problems.add(setting.key, path, why_relative, set_key(setting.key, setting.default))
        return Path(expanded)

    return rule


def plain_http_allowed(host: str) -> bool:
    """Whether HOST is this machine or link-local, where plain http crosses no network that others share.

    127.0.0.0/8, ::1 and `localhost` never leave the machine; 169.254.0.0/16 and fe80::/10 never
    leave the link (the local GCE twin serves its mirrors at 169.254.2.2).
    """
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_link_local


def mirror(why: str, http_why: str, example: str, *, then: Callable[[str], str] = str) -> Rule:
    """A mirror's URL (or none): the URL pattern, and https unless the host is local (see plain_http_allowed)."""

    def rule(problems: Problems, setting: Setting, value: object) -> str:
        url = check_text(problems, setting.key, value, _MIRROR_URL_OR_EMPTY, why, example)
        host = urllib.parse.urlsplit(url).hostname or ""
        if url.startswith("http://") and not plain_http_allowed(host):
            why_http = (
                "plain http:// is allowed only to this machine or a link-local address "
                f"(127.0.0.0/8, localhost, 169.254.0.0/16): {http_why}"
            )
            problems.add(setting.key, url, why_http, set_key(setting.key, "https://" + url[len("http://") :]))
            return ""
        return then(url) if url else url

    return rule


def ssh_ranges(problems: Problems, setting: Setting, value: object) -> tuple[str, ...]:
    """The rule of `allowedSshCidrs`: at least one IPv4 range, each written as its network."""
    key = setting.key
    items = as_list(value)
    if items is None:
        fix = set_key(key, ["203.0.113.7/32"]) + " (one index per range)"
        problems.add(key, value, "it must be a list of IPv4 ranges", fix)
        return ()
    if not items:
        own = set_key(key, ["YOUR.PUBLIC.IP/32"])
        fix = "allow your own address: " + own + " (0.0.0.0/0 allows the whole internet)"
        problems.add(key, value, "the firewall would let nobody reach SSH", fix)
        return ()
    cidrs: list[str] = []
    for index, item in enumerate(items):
        where = f"{key}[{index}]"
        fix = set_key(key, ["203.0.113.7/32"], at=index)
        if isinstance(item, str) and re.fullmatch(r"/?[0-9]{0,2}", item):
            # What `--allow "$(curl -s https://checkip.amazonaws.com)/32"` gives when the lookup printed nothing.
            why = "it has no address before the slash (did the lookup of your public address fail?)"
            problems.add(where, item, why, set_key(key, ["YOUR.PUBLIC.IP/32"], at=index))
            continue
        if not isinstance(item, str) or not re.fullmatch(r"[0-9./]{7,18}", item):
            problems.add(where, item, "it is not an IPv4 range like 203.0.113.7/32", fix)
            continue
        try:
            network = ipaddress.IPv4Network(item, strict=False)
        except ValueError:
            problems.add(where, item, "it is not an IPv4 range like 203.0.113.7/32", fix)
            continue
        if str(network) != item and f"{network.network_address}" != item:
            fix = set_key(key, [str(network)], at=index)
            problems.add(where, item, f"it has host bits set (the range is {network})", fix)
            continue
        cidrs.append(str(network))
    return tuple(cidrs)


def _known_time_zone(name: str) -> bool:
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_+/-]{0,63}", name):
        return False
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


def time_zone(problems: Problems, setting: Setting, value: object) -> str:
    """The rule of `timeZone`: a zone the IANA database (and so the VM) knows."""
    if isinstance(value, str) and _known_time_zone(value):
        return value
    fix = set_key(setting.key, "Europe/Berlin") + " (`timedatectl list-timezones` lists them)"
    problems.add(setting.key, value, "it is not an IANA time zone name", fix)
    return ""
