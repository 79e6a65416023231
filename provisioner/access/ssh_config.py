"""~/.ssh/config entries for course VMs: our own file, included by one marked line, nothing else touched."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path

from provisioner.access.proxy import INSTANCE_NAME, iap_location, iap_proxy_command
from provisioner.errors import CourseVmError
from provisioner.files import write_atomically
from provisioner.paths import ON_WINDOWS
from provisioner.recipe.ports import DEFAULT_FORWARD_TEXTS, parse_forward
from provisioner.stack import DEFAULT_STACK

INCLUDE_MARK = "# course-vm: its hosts (python -m provisioner manages this line and that file)"
BEGIN = "# >>> course-vm host {alias} >>>"
END = "# <<< course-vm host {alias} <<<"
_ALIAS = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
# The Linux login rule of the `username` setting.
_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
_UNSAFE_PATH = re.compile(r"[\x00-\x1f\x7f\"'\\%$]")
# On Windows a backslash is a separator, written as `/` (see _written), so it is no syntax there.
_UNSAFE_WINDOWS_PATH = re.compile(r"[\x00-\x1f\x7f\"'%$]")


def host_alias(stack: str, student: str = "") -> str:
    """The `Host` name of a VM: `course-vm` for the default stack, else `course-vm-STACK`; then `-STUDENT`."""
    alias = "course-vm" if stack == DEFAULT_STACK else f"course-vm-{stack}"
    return f"{alias}-{student}" if student else alias


def ssh_config_block(
    alias: str,
    host: str,
    user: str,
    identity_file: str,
    known_hosts_file: str | None = None,
    port: int = 22,
    *,
    proxy_command: str | None = None,
    windows: bool = ON_WINDOWS,
    default_keys: bool = False,
    forwards: Sequence[object] = DEFAULT_FORWARD_TEXTS,
    forward_agent: object = False,
) -> str:
    """A `Host` block that logs in with the course key and forwards the course's ports (FORWARDS, each
    `PORT` or `LOCAL:REMOTE`: see recipe/ports.py) to the laptop's loopback; FORWARD_AGENT: the agent too.

    With KNOWN_HOSTS_FILE (the pinned keys), ssh verifies the host key as strictly as the checker.
    With DEFAULT_KEYS (the hand-out of a student who brought their own key) there is no IdentityFile
    line, so ssh offers the user's own keys and agent; IDENTITY_FILE is then "".
    With PROXY_COMMAND (sshAccess iap: only course-vm's own IAP tunnel, see proxy.py) HOST is the
    instance's name, which ssh hands the tunnel as `%h` and looks the pinned keys up under; its
    program is written `gcloud.cmd` on WINDOWS, `gcloud` elsewhere.
    Every value is checked first, for ssh reads a newline in any of them as a line of its own
    (`Match exec ...` runs a command): an alias, an IP address (or an instance name behind the
    tunnel), a Linux login, plain paths, a port. On WINDOWS the paths' backslashes are written as
    `/`. Raises CourseVmError naming every bad value.
    """
    # The values may come from a stack's outputs, so none is taken to be of its declared type.
    problems = _destination_problems(alias, host, proxy_command) + _login_problems(
        user, identity_file, known_hosts_file, port, windows=windows, default_keys=default_keys
    )
    problems += _forward_problems(forwards, forward_agent)
    if problems:
        name = alias if isinstance(alias, str) and _ALIAS.fullmatch(alias) else repr(alias)
        raise CourseVmError(
            f"{name}: cannot write an ssh Host block: {'; '.join(problems)}. Fix: these values come from the "
            "stack's outputs (`pulumi stack output --json`) or the settings; run `course-vm up` again, and check "
            "who else can change that stack"
        )

    def quoted(path: str) -> str:
        path = _written(path, windows)
        return f'"{path}"' if " " in path else path

    lines = [f"Host {alias}", f"    HostName {host}"]
    if location := iap_location(proxy_command):
        # Windows' OpenSSH starts a ProxyCommand without a shell, which alone finds gcloud's .cmd script.
        lines.append(f"    ProxyCommand {iap_proxy_command(*location, windows=windows)}")
    if port != 22:
        lines.append(f"    Port {port}")
    lines.append(f"    User {user}")
    if not default_keys:
        lines += [f"    IdentityFile {quoted(identity_file)}", "    IdentitiesOnly yes"]
    if known_hosts_file:
        lines += [f"    UserKnownHostsFile {quoted(known_hosts_file)}", "    StrictHostKeyChecking yes"]
    return "\n".join(lines + _forward_lines(forwards, forward_agent is True)) + "\n"


def _destination_problems(alias: object, host: object, proxy_command: str | None) -> list[str]:
    """What is wrong with a Host block's ALIAS and HOST (an IP address, or behind PROXY_COMMAND an instance name)."""
    problems = []
    if not (isinstance(alias, str) and _ALIAS.fullmatch(alias)):
        problems.append(f"alias {alias!r} is not a plain name")
    if proxy_command is None:
        if not _is_ip_address(host):
            problems.append(f"host {host!r} is not an IP address")
    else:
        if not (isinstance(host, str) and INSTANCE_NAME.fullmatch(host)):
            problems.append(f"host {host!r} is not a GCE instance name")
        if iap_location(proxy_command) is None:
            problems.append(f"proxy command {proxy_command!r} is not course-vm's IAP tunnel")
    return problems


def _login_problems(
    user: object, identity_file: object, known_hosts_file: object, port: object, *, windows: bool, default_keys: bool
) -> list[str]:
    """What is wrong with a Host block's login: its USER, key files and PORT."""
    problems = []
    if not (isinstance(user, str) and _USER.fullmatch(user)):
        problems.append(f"user {user!r} is not a Linux login")
    optional = {"known_hosts file": known_hosts_file} if known_hosts_file is not None else {}
    if default_keys and identity_file != "":
        problems.append(f"identity file {identity_file!r} is given, but the user's own keys log in")
    identity = {} if default_keys else {"identity file": identity_file}
    for what, path in {**identity, **optional}.items():
        if problem := _path_problem(path, what, windows):
            problems.append(problem)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        problems.append(f"port {port!r} is not a TCP port")
    return problems


def _forward_lines(forwards: Sequence[object], agent: bool) -> list[str]:
    """The block's lines that forward the agent (AGENT) and FORWARDS, each bound to the laptop's loopback
    whatever GatewayPorts says: nobody on the laptop's network reaches the VM through it."""
    lines = ["    ForwardAgent yes"] if agent else []
    for forward in filter(None, map(parse_forward, forwards)):
        lines.append(f"    LocalForward localhost:{forward.local} localhost:{forward.remote}")
    return lines


def _forward_problems(forwards: object, forward_agent: object) -> list[str]:
    """What is wrong with a Host block's FORWARDS (ports, see recipe/ports.py) and FORWARD_AGENT (true or false)."""
    if isinstance(forwards, str) or not isinstance(forwards, Sequence):
        return [f"forwarded ports {forwards!r} are no list"]
    problems = [f"forwarded port {forward!r} is not PORT or LOCAL:REMOTE" for forward in forwards
                if parse_forward(forward) is None]  # fmt: skip
    locals_ = [forward.local for forward in filter(None, map(parse_forward, forwards))]
    if len(set(locals_)) != len(locals_):
        problems.append(f"forwarded ports {list(forwards)!r} name a laptop port twice")
    if not isinstance(forward_agent, bool):
        problems.append(f"forward agent {forward_agent!r} is not true or false")
    return problems


def _is_ip_address(host: object) -> bool:
    # Not a scoped IPv6 address either: ssh would expand the `%` of `fe80::1%eth0`.
    if not isinstance(host, str) or "%" in host:
        return False
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _path_problem(path: object, what: str, windows: bool) -> str | None:
    if not isinstance(path, str) or not path:
        return f"{what} {path!r} is not a path"
    if (_UNSAFE_WINDOWS_PATH if windows else _UNSAFE_PATH).search(path):
        return f"{what} {path!r} holds {_syntax(windows)}, which ssh reads as syntax"
    if path.lstrip().startswith("#"):
        return f"{what} {path!r} starts with #, which ssh reads as a comment"
    return None


def _syntax(windows: bool) -> str:
    return "a control character, a quote, % or $" if windows else "a control character, a quote, a backslash, % or $"


def _written(path: str, windows: bool) -> str:
    """PATH as an ssh config line holds it: on Windows with `/` for each backslash.

    OpenSSH reads a doubled backslash as one (an escape), so a UNC path would lose one; OpenSSH
    for Windows takes `/` as a separator, so written so the path means one thing to every reader.
    """
    return path.replace("\\", "/") if windows else path


def config_path(path: str, what: str, *, windows: bool = ON_WINDOWS) -> str:
    """PATH as one argument of an ssh config line once double-quoted (on WINDOWS with `/` separators).

    Raises CourseVmError when PATH holds what ssh would read as syntax: a control character (a
    newline would start a line of its own), a quote, or `%` and `$` (expanded); and, but on
    Windows, a backslash (an escape).
    """
    if _path_problem(path, what, windows):
        raise CourseVmError(
            f"{what} {path!r} cannot be written into an ssh config: it holds {_syntax(windows)}, which ssh reads "
            "as syntax. Fix: use a path without them"
        )
    return _written(path, windows)


def ssh_dir() -> Path:
    return Path.home() / ".ssh"


def hosts_file() -> Path:
    """The file course-vm owns: every course VM's `Host` block."""
    return ssh_dir() / "course-vm.config"


def add_host(alias: str, block: str) -> Path:
    """Write (or replace) the `Host` block for ALIAS and make ~/.ssh/config include our file.

    Of the user's ~/.ssh/config only one marked `Include` line at the top is ours; everything
    else in it stays as it was. Returns our file's path. Raises ValueError for a bad alias, and
    CourseVmError for a home directory whose path an ssh config cannot hold.
    """
    if not _ALIAS.fullmatch(alias):
        raise ValueError(f"bad ssh host alias {alias!r}")
    _include_line()  # raises for a home ssh cannot read, before anything is written
    blocks = _blocks(_read(hosts_file()))
    blocks[alias] = block if block.endswith("\n") else block + "\n"
    _write_hosts(blocks)
    _ensure_include()
    return hosts_file()


def remove_host(alias: str) -> bool:
    """Remove ALIAS's block; with none left, remove our file and our `Include` line. False if absent."""
    blocks = _blocks(_read(hosts_file()))
    if alias not in blocks:
        return False
    del blocks[alias]
    if blocks:
        _write_hosts(blocks)
    else:
        hosts_file().unlink(missing_ok=True)
        _remove_include()
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _blocks(text: str) -> dict[str, str]:
    found = re.finditer(r"^# >>> course-vm host (\S+) >>>\n(.*?)^# <<< course-vm host \1 <<<\n", text, re.M | re.S)
    return {match.group(1): match.group(2) for match in found}


def _write_hosts(blocks: dict[str, str]) -> None:
    text = "# Written by course-vm; `course-vm local down` (or `down`) removes a host's block.\n"
    for alias, block in sorted(blocks.items()):
        text += f"{BEGIN.format(alias=alias)}\n{block}{END.format(alias=alias)}\n"
    write_atomically(hosts_file(), text, 0o600)


def _include_line() -> str:
    # Quoted: a space in $HOME would otherwise split the path into two files to include.
    return f'Include "{config_path(str(hosts_file()), "our ssh config file")}"  {INCLUDE_MARK}\n'


def _user_config() -> Path:
    config = ssh_dir() / "config"
    # A symlinked config (dotfile managers) is edited where it points, and stays a link.
    return config.resolve() if config.is_symlink() else config


def _ensure_include() -> None:
    config = _user_config()
    text = _read(config)
    lines = text.splitlines(keepends=True)
    ours = [line for line in lines if _is_ours(line)]
    if ours == [_include_line()]:
        return
    # An older course-vm's line (unquoted) is replaced, not kept beside the new one.
    kept = "".join(line for line in lines if not _is_ours(line))
    # At the very top: an Include after a `Host` line would apply only inside that Host.
    mode = config.stat().st_mode & 0o777 if config.exists() else 0o600
    write_atomically(config, _include_line() + kept, mode)


def _is_ours(line: str) -> bool:
    return line.rstrip("\n").endswith(INCLUDE_MARK)


def _remove_include() -> None:
    config = _user_config()
    text = _read(config)
    kept = [line for line in text.splitlines(keepends=True) if not _is_ours(line)]
    if "".join(kept) != text:
        write_atomically(config, "".join(kept), config.stat().st_mode & 0o777)
