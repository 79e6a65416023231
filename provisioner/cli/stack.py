"""The Pulumi CLI, driven for `up`, `down` and `status` (Automation API) and read for a stack's outputs."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from provisioner.access.ssh_config import add_host, host_alias, remove_host, ssh_config_block
from provisioner.errors import CourseVmError
from provisioner.paths import PROJECT_DIR, state_home

INSTALL_HINT = "install the Pulumi CLI (https://www.pulumi.com/docs/install/: `curl -fsSL https://get.pulumi.com | sh`)"


class StackLike(Protocol):
    """The part of pulumi.automation.Stack these commands use (a fake stands in for it in tests)."""

    def set_config(self, key: str, value: Any, *, path: bool = False) -> None: ...
    def remove_config(self, key: str, *, path: bool = False) -> None: ...
    def up(self, *, on_output: Callable[[str], Any] | None = None, continue_on_error: bool | None = None) -> Any: ...
    def destroy(self, *, on_output: Callable[[str], Any] | None = None) -> Any: ...
    def outputs(self) -> Mapping[str, Any]: ...


StackOpener = Callable[[str], StackLike]


def state_dir() -> Path:
    return state_home() / "pulumi"


def _logged_in() -> bool:
    """Whether the user chose a Pulumi backend already (`pulumi login ...`)."""
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    try:
        return bool(json.loads((home / "credentials.json").read_text()).get("current"))
    except (OSError, ValueError):
        return False


def backend_environment() -> dict[str, str]:
    """Environment for the Pulumi CLI: a local file backend unless the user chose one.

    No Pulumi account is needed: state goes to $XDG_STATE_HOME/course-vm/pulumi, and secrets are
    encrypted with a passphrase course-vm generates once there (mode 0600).
    """
    environment: dict[str, str] = {}
    if not os.environ.get("PULUMI_BACKEND_URL") and not _logged_in():
        directory = state_dir()
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        environment["PULUMI_BACKEND_URL"] = directory.as_uri()
    if not os.environ.get("PULUMI_CONFIG_PASSPHRASE") and not os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
        passphrase = state_dir() / "passphrase"
        if not passphrase.exists():
            passphrase.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(32) + "\n")
        environment["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(passphrase)
    return environment


def open_stack(name: str) -> StackLike:
    """The stack NAME of this project, created if needed, through the Pulumi CLI.

    Raises CourseVmError when the CLI is not installed.
    """
    if shutil.which("pulumi") is None:
        raise CourseVmError(
            f"the Pulumi CLI is not installed, and `up`, `down` and `status` drive it. Fix: {INSTALL_HINT}"
        )
    from pulumi import automation

    options = automation.LocalWorkspaceOptions(work_dir=str(PROJECT_DIR), env_vars=backend_environment())
    stack: StackLike = automation.create_or_select_stack(name, work_dir=str(PROJECT_DIR), opts=options)
    return stack


def _values(outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {key: getattr(value, "value", value) for key, value in outputs.items()}


def _vms(outputs: Mapping[str, Any]) -> dict[str, Any]:
    return dict(outputs.get("students") or ({"": outputs} if outputs.get("ip") else {}))


def host_aliases(stack_name: str, outputs: Mapping[str, Any]) -> set[str]:
    """The `Host` names of a stack's VMs: its one VM's, or each student's."""
    return {host_alias(stack_name, student) for student in _vms(outputs)}


def host_entries(stack_name: str, outputs: Mapping[str, Any]) -> tuple[dict[str, str], list[CourseVmError]]:
    """The `Host` blocks of a stack's VMs by alias, and the VMs whose values an ssh config cannot hold.

    Built from each VM's fields (address, login, key, pin file), each checked: never from the
    `sshConfig` text, which anyone who can write the stack's state could turn into a `Match exec`.
    """
    blocks: dict[str, str] = {}
    problems: list[CourseVmError] = []
    for student, vm in _vms(outputs).items():
        alias = host_alias(stack_name, student)
        try:
            blocks[alias] = ssh_config_block(
                alias, vm.get("ip"), vm.get("username"), vm.get("identityFile"), vm.get("knownHostsFile") or None
            )
        except CourseVmError as error:
            problems.append(error)
    return blocks, problems


def up(
    stack_name: str, project: str | None, zone: str | None, allowed_cidrs: list[str], *,
    opener: StackOpener = open_stack, on_output: Callable[[str], Any] = print,
) -> dict[str, Any]:  # fmt: skip
    """Create or update the stack's VMs with Pulumi's live progress, then write their `Host` entries.

    Settings given here are stored in the stack's config; the rest keep their values or defaults.
    One student's failure does not stop the others' VMs (Pulumi's continue-on-error). Entries of
    students no longer on the roster are removed. Raises CourseVmError when the Pulumi CLI is
    missing; Pulumi's own errors propagate.
    """
    from pulumi.automation import ConfigValue

    stack = opener(stack_name)
    if project:
        stack.set_config("gcp:project", ConfigValue(project))
    if zone:
        stack.set_config("gcp:zone", ConfigValue(zone))
    if allowed_cidrs:
        stack.remove_config("allowedSshCidrs")
        for index, cidr in enumerate(allowed_cidrs):
            stack.set_config(f"allowedSshCidrs[{index}]", ConfigValue(cidr), path=True)
    before = host_aliases(stack_name, _values(stack.outputs()))
    outputs = _values(stack.up(on_output=on_output, continue_on_error=True).outputs)
    after, problems = host_entries(stack_name, outputs)
    for alias, block in after.items():
        add_host(alias, block)
    # A VM whose values were refused loses its old block too: it may name an old address.
    for alias in (before | host_aliases(stack_name, outputs)) - after.keys():
        remove_host(alias)
    if problems:
        raise CourseVmError(" | ".join(str(problem) for problem in problems))
    return outputs


def down(stack_name: str, *, opener: StackOpener = open_stack, on_output: Callable[[str], Any] = print) -> None:
    """Destroy everything the stack created and remove its `Host` entries."""
    stack = opener(stack_name)
    aliases = {host_alias(stack_name), *host_aliases(stack_name, _values(stack.outputs()))}
    stack.destroy(on_output=on_output)
    for alias in aliases:
        remove_host(alias)


def status(stack_name: str, *, opener: StackOpener = open_stack) -> dict[str, Any]:
    """The stack's outputs: empty when nothing exists."""
    return _values(opener(stack_name).outputs())


def stack_outputs(project_dir: Path, stack_name: str | None) -> dict[str, Any]:
    """The stack's outputs, read with the Pulumi CLI. Raises CourseVmError when that is not possible."""
    pulumi = shutil.which("pulumi")
    if pulumi is None:
        raise CourseVmError(
            "the Pulumi CLI is needed to read the stack's outputs and is not installed. "
            "Fix: install it (https://www.pulumi.com/docs/install/), or pass --host, --user, "
            "--identity and a host key source"
        )
    command = [pulumi, "stack", "output", "--json", "--show-secrets", *(["--stack", stack_name] if stack_name else [])]
    # The backend `up` uses: without it the CLI would look for the stack somewhere else.
    environment = {**os.environ, **backend_environment()}
    result = subprocess.run(command, cwd=project_dir, env=environment, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise CourseVmError(
            f"`pulumi stack output` failed: {result.stderr.strip()}. "
            "Fix: select the stack (`pulumi stack select NAME`) after `pulumi up`"
        )
    outputs = json.loads(result.stdout or "{}")
    missing = [] if outputs.get("students") else [k for k in ("ip", "username", "identityFile") if not outputs.get(k)]
    if missing:
        raise CourseVmError(f"the stack has no {', '.join(missing)} output. Fix: run `pulumi up` first")
    return dict(outputs)


def stack_vms(outputs: dict[str, Any], only: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """The stack's VMs in its outputs, by student name ("" for a stack's one VM); ONLY: those named.

    Raises CourseVmError for a name not on the roster.
    """
    vms: dict[str, dict[str, Any]] = dict(outputs.get("students") or {"": outputs})
    unknown = [name for name in only or () if name not in vms]
    if unknown:
        known = ", ".join(name for name in vms if name) or "(none: the stack is not a class)"
        raise CourseVmError(f"no student {', '.join(unknown)} in the stack's roster. Fix: one of {known}")
    return {name: vms[name] for name in only or vms}
