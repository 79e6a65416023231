"""The Pulumi CLI and where it runs: the backend and passphrase, the project directory, one process per call."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from provisioner.errors import MissingPrerequisiteError
from provisioner.paths import FROM_CHECKOUT, ON_WINDOWS, PACKAGE_ROOT, PROGRAM_DIR, project_dir, state_home

PULUMI_INSTALL = (
    "install the Pulumi CLI: https://www.pulumi.com/docs/install/ "
    "(Linux, macOS: `curl -fsSL https://get.pulumi.com | sh`; Windows: `winget install pulumi`)"
)
OnOutput = Callable[[str], object]
"""Gets each line the CLI prints on stdout, as it prints it (Pulumi's live progress)."""


def state_dir() -> Path:
    """course-vm's own Pulumi backend: a local file backend, and the passphrase of its stacks."""
    return state_home() / "pulumi"


def passphrase_file() -> Path:
    """The passphrase course-vm generates once for the stacks of its own backend (mode 0600)."""
    return state_dir() / "passphrase"


def chosen_backend() -> str | None:
    """The backend the user chose: PULUMI_BACKEND_URL, else the one `pulumi login` selected; None if neither."""
    if os.environ.get("PULUMI_BACKEND_URL"):
        return os.environ["PULUMI_BACKEND_URL"]
    home = Path(os.environ.get("PULUMI_HOME") or Path.home() / ".pulumi")
    try:
        current = json.loads((home / "credentials.json").read_text()).get("current")
    except (OSError, ValueError, AttributeError):
        return None
    return str(current) if current else None


def is_own_backend(url: str) -> bool:
    """Whether URL (`file:///...` or `file://~/...`) is course-vm's own backend, reached through `pulumi login`."""
    if not url.startswith("file://"):
        return False
    path = Path(os.path.expanduser(urllib.parse.unquote(url[len("file://") :])))
    return path.resolve() == state_dir().resolve()


def _user_passphrase() -> bool:
    # An empty PULUMI_CONFIG_PASSPHRASE is a passphrase too (Pulumi accepts it).
    return "PULUMI_CONFIG_PASSPHRASE" in os.environ or bool(os.environ.get("PULUMI_CONFIG_PASSPHRASE_FILE"))


def backend_environment() -> dict[str, str]:
    """What the Pulumi CLI gets on top of the user's environment: one rule for where stacks live.

    A backend the user chose (PULUMI_BACKEND_URL, or `pulumi login`) is used as it is, with their
    own passphrase settings (PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE), so that
    course-vm and the raw `pulumi` CLI see the same stacks the same way. Without one, stacks go to
    course-vm's own local backend ($XDG_STATE_HOME/course-vm/pulumi, no account needed), whose
    secrets are encrypted with the passphrase file course-vm generates there, unless the user set
    a passphrase. `course-vm env` prints the lines that reach it from the raw CLI.
    """
    chosen = chosen_backend()
    environment: dict[str, str] = {}
    if chosen is None:
        state_dir().mkdir(mode=0o700, parents=True, exist_ok=True)
        environment["PULUMI_BACKEND_URL"] = state_dir().as_uri()
    if (chosen is None or is_own_backend(chosen)) and not _user_passphrase():
        passphrase = passphrase_file()
        if not passphrase.exists():
            passphrase.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(passphrase, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as file:
                file.write(secrets.token_urlsafe(32) + "\n")
        environment["PULUMI_CONFIG_PASSPHRASE_FILE"] = str(passphrase)
    return environment


def runtime_environment() -> dict[str, str]:
    """What Pulumi needs to run the program in the project folder with this course-vm: outside a virtualenv the
    python course-vm runs in; from a checkout, the checkout on PYTHONPATH (the program imports `provisioner`)."""
    environment: dict[str, str] = {}
    if sys.prefix == sys.base_prefix:
        environment["PULUMI_PYTHON_CMD"] = sys.executable
    if FROM_CHECKOUT:
        given = os.environ.get("PYTHONPATH")
        environment["PYTHONPATH"] = os.pathsep.join([str(PACKAGE_ROOT), *([given] if given else [])])
    return environment


def project_directory() -> Path:
    """The project folder Pulumi runs in (paths.project_dir), ready to run the program.

    It gets the shipped Pulumi.yaml (its python runtime set to the interpreter course-vm runs in) and
    __main__.py, written again when an upgrade (or a checkout's change) changed them; the stack files beside
    them stay the user's.
    """
    directory = project_dir()
    refuse_stack_files_left_in_checkout()
    directory.mkdir(parents=True, exist_ok=True)
    in_virtualenv = sys.prefix != sys.base_prefix
    project_file = installed_project_file(
        (PROGRAM_DIR / "Pulumi.yaml").read_text(), sys.prefix if in_virtualenv else None
    )
    _write_if_changed(directory / "Pulumi.yaml", project_file)
    _write_if_changed(directory / "__main__.py", (PROGRAM_DIR / "__main__.py").read_text())
    return directory


def refuse_stack_files_left_in_checkout(*, checkout: Path | None = None, windows: bool = ON_WINDOWS) -> None:
    """Raise CourseVmError when the checkout (CHECKOUT, default this one when course-vm runs from one) holds stack
    files that the project folder has not: a checkout was once its own project folder, and a stack whose settings
    were left there would otherwise look empty. Nothing is moved without the user."""
    if checkout is None:
        if not FROM_CHECKOUT:
            return
        checkout = PACKAGE_ROOT
    directory = project_dir()
    left = sorted(path for path in checkout.glob("Pulumi.*.yaml") if not (directory / path.name).exists())
    if left:
        from provisioner.errors import CourseVmError

        names = ", ".join(path.name for path in left)
        if windows:
            folder, files = _powershell_quoted(str(directory)), ", ".join(_powershell_quoted(str(p)) for p in left)
            move = f"New-Item -ItemType Directory -Force {folder} | Out-Null; Move-Item {files} {folder}"
        else:
            folder, files = shlex.quote(str(directory)), " ".join(shlex.quote(str(p)) for p in left)
            move = f"mkdir -p {folder} && mv {files} {folder}/"
        raise CourseVmError(
            f"the stack settings {names} are in the checkout {checkout}, but every way of running course-vm now "
            f"keeps them in its project folder {directory}. Fix: move them there: {move}"
        )


def installed_project_file(text: str, virtualenv: str | None) -> str:
    """The checkout's Pulumi.yaml TEXT with its runtime's `virtualenv: venv` made VIRTUALENV, an absolute
    path (Pulumi takes one), or removed when course-vm is installed outside a virtualenv (see runtime_environment)."""
    from provisioner.errors import CourseVmError

    line = "    virtualenv: venv\n"
    if line not in text:
        raise CourseVmError(f"the packaged Pulumi.yaml has no `{line.strip()}` line. Fix: reinstall course-vm")
    # JSON's double-quoted string is YAML too, and keeps a Windows path's backslashes.
    return text.replace(line, f"    virtualenv: {json.dumps(virtualenv)}\n" if virtualenv else "")


def _write_if_changed(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        path.write_text(text)


def raw_cli_lines(*, windows: bool = ON_WINDOWS) -> list[str]:
    """Shell lines that give the raw `pulumi` CLI what course-vm gives it: the same backend, the same
    passphrase, the same Python for the program, the same project directory (PowerShell's syntax on
    Windows, POSIX sh elsewhere)."""
    environment = {**backend_environment(), **runtime_environment()}
    chosen = chosen_backend()
    quoted = _powershell_quoted if windows else shlex.quote
    lines = [
        f"# course-vm's own backend; or once for all shells: pulumi login {state_dir().as_uri()}"
        if chosen is None
        else f"# your Pulumi backend {_one_line(chosen)}: course-vm uses it with your own passphrase settings, "
        "as pulumi does"
    ]
    for name, value in environment.items():
        lines.append(f"$env:{name} = {quoted(value)}" if windows else f"export {name}={quoted(value)}")
    directory = str(project_directory())
    lines.append(f"Set-Location {quoted(directory)}" if windows else f"cd {quoted(directory)}")
    return lines


POWERSHELL_QUOTES = "'\u2018\u2019\u201a\u201b"
"""What PowerShell reads as a single quote: the ASCII one and four typographic ones."""


def _powershell_quoted(value: str) -> str:
    """VALUE as a PowerShell single-quoted string: every quote PowerShell knows doubled."""
    for quote in POWERSHELL_QUOTES:
        value = value.replace(quote, quote * 2)
    return f"'{value}'"


def _one_line(text: str) -> str:
    """TEXT for a comment line: every character a shell or terminal would not print as it is, as \\uXXXX."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


@dataclass(frozen=True)
class CliResult:
    """One run of the Pulumi CLI: what it was given, how it exited, and what it printed."""

    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str


class CliError(Exception):
    """The Pulumi CLI exited with a failure; the session turns it into course-vm's error (see engine_errors)."""

    def __init__(self, result: CliResult) -> None:
        super().__init__(f"pulumi {' '.join(result.args[:2])} exited {result.code}: {result.stderr.strip()}")
        self.result = result


class Workspace:
    """The Pulumi CLI as course-vm runs it: in the project directory, on the backend and passphrase of
    backend_environment, non-interactive. Every process course-vm starts of it starts here (`run`)."""

    def __init__(self, pulumi: str, directory: Path, environment: Mapping[str, str]) -> None:
        self.pulumi = pulumi
        self.directory = directory
        self.environment = dict(environment)
        """What the CLI gets on top of the user's environment (see backend_environment)."""

    @classmethod
    def open(cls, *, reads_only: bool = False) -> Workspace:
        """The workspace of this machine. Raises MissingPrerequisiteError when the Pulumi CLI is not
        installed (before anything is set up); READS_ONLY words it for a command that only reads a stack."""
        pulumi = shutil.which("pulumi")
        if pulumi is None:
            uses = (
                "is needed to read the stack's outputs and is not installed"
                if reads_only
                else "is not installed, and `up`, `down` and `status` drive it"
            )
            raise MissingPrerequisiteError(f"the Pulumi CLI {uses}. Fix: {PULUMI_INSTALL}")
        environment = {**backend_environment(), **runtime_environment()}
        return cls(pulumi, project_directory(), environment)

    def run(
        self, args: Sequence[str], on_output: OnOutput | None = None, extra: Mapping[str, str] | None = None
    ) -> CliResult:
        """Run `pulumi ARGS` to its end, each stdout line to ON_OUTPUT as it comes; EXTRA on top of the
        environment. Raises CliError when it fails.

        Ctrl-C reaches the CLI too (the same process group), which then cancels its operation cleanly,
        saying so: what it says still goes to ON_OUTPUT (a pipe nobody reads would fill and hold it), and
        KeyboardInterrupt goes on once it ended. A second Ctrl-C stops the waiting.
        """
        command = [self.pulumi, "--non-interactive", *args]
        environment = {**os.environ, **self.environment, **(extra or {})}
        stdout: list[str] = []

        def said(line: str) -> None:
            stdout.append(line)
            if on_output is not None:
                on_output(line.rstrip("\n"))

        with subprocess.Popen(
            command, cwd=self.directory, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL, encoding="utf-8", errors="replace",
        ) as process:  # fmt: skip
            assert process.stdout is not None and process.stderr is not None
            stderr: list[str] = []
            reader = threading.Thread(target=_read_all, args=(process.stderr, stderr), daemon=True)
            reader.start()
            try:
                for line in process.stdout:
                    said(line)
            except KeyboardInterrupt:
                for line in process.stdout:
                    said(line)
                process.wait()
                raise
            code = process.wait()
            reader.join()
        result = CliResult(tuple(args), code, "".join(stdout), "".join(stderr))
        if code != 0:
            raise CliError(result)
        return result

    @staticmethod
    def installed() -> bool:
        """Whether the Pulumi CLI is on PATH (`open` says how to install it when it is not)."""
        return shutil.which("pulumi") is not None


def _read_all(stream: IO[str], into: list[str]) -> None:
    into.extend(stream)
