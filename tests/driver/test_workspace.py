"""Where the Pulumi CLI runs: the backend and passphrase, the project directory, the Python of the program."""

from __future__ import annotations

import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from provisioner.cli.main import main
from provisioner.driver import workspace
from provisioner.driver.state import walk
from provisioner.driver.workspace import (
    PULUMI_INSTALL,
    CliError,
    Workspace,
    backend_environment,
    chosen_backend,
    installed_project_file,
    is_own_backend,
    project_directory,
    raw_cli_lines,
    runtime_environment,
)
from provisioner.errors import CourseVmError, ExitStatus, MissingPrerequisiteError
from provisioner.paths import project_dir
from tests.conftest import ROOT
from tests.support.cli import in_this_process, run_cli
from tests.support.outputs import one_vm
from tests.support.stand_in_pulumi import stand_in_pulumi


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A home of its own, logged in to no backend, with no passphrase set."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    for name in ("PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE", "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_HOME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def own_backend(home: Path) -> Path:
    return home / "state" / "course-vm" / "pulumi"


def log_in(home: Path, url: str) -> None:
    """What `pulumi login URL` leaves in ~/.pulumi."""
    (home / ".pulumi").mkdir(exist_ok=True)
    (home / ".pulumi" / "credentials.json").write_text(json.dumps({"current": url}))


# The backend: the user's choice as it is, else course-vm's own with a passphrase it generates.


def test_default_backend_is_a_local_file_with_a_generated_passphrase(home: Path) -> None:
    environment = backend_environment()
    assert environment["PULUMI_BACKEND_URL"] == own_backend(home).as_uri()
    assert stat.S_IMODE(own_backend(home).stat().st_mode) == 0o700
    passphrase = Path(environment["PULUMI_CONFIG_PASSPHRASE_FILE"])
    assert passphrase == own_backend(home) / "passphrase"
    assert stat.S_IMODE(passphrase.stat().st_mode) == 0o600
    first = passphrase.read_text()
    assert len(first.strip()) >= 40
    assert backend_environment() == environment and passphrase.read_text() == first, "generated once"


def test_a_backend_the_user_chose_is_used_with_their_own_passphrase_settings(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stack made with `pulumi stack init` and a typed passphrase: course-vm's passphrase file would not fit.
    log_in(home, "https://api.pulumi.com")
    assert chosen_backend() == "https://api.pulumi.com"
    assert backend_environment() == {}
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "theirs")
    assert backend_environment() == {}
    (home / ".pulumi" / "credentials.json").unlink()
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE")
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://their-bucket")
    assert chosen_backend() == "s3://their-bucket"
    assert backend_environment() == {}
    assert not (own_backend(home) / "passphrase").exists()


def test_the_backend_url_wins_over_the_login_and_pulumi_home_is_where_the_login_is(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    log_in(home, "https://api.pulumi.com")
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://their-bucket")
    assert chosen_backend() == "s3://their-bucket"
    monkeypatch.delenv("PULUMI_BACKEND_URL")
    monkeypatch.setenv("PULUMI_HOME", str(home / "elsewhere"))
    assert chosen_backend() is None, "no login in PULUMI_HOME"


@pytest.mark.parametrize("credentials", ["not JSON", "[]", '{"current": ""}', "{}"])
def test_a_login_that_cannot_be_read_is_none(home: Path, credentials: str) -> None:
    (home / ".pulumi").mkdir()
    (home / ".pulumi" / "credentials.json").write_text(credentials)
    assert chosen_backend() is None


def test_an_empty_passphrase_is_the_users_choice_too(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE", "")
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" not in backend_environment()
    monkeypatch.delenv("PULUMI_CONFIG_PASSPHRASE")
    monkeypatch.setenv("PULUMI_CONFIG_PASSPHRASE_FILE", str(home / "theirs"))
    assert "PULUMI_CONFIG_PASSPHRASE_FILE" not in backend_environment()


def test_logged_in_to_course_vms_own_backend_keeps_its_passphrase(home: Path) -> None:
    # `pulumi login file://...` as `course-vm env` says: the same stacks, the same passphrase.
    log_in(home, own_backend(home).as_uri())
    assert backend_environment() == {"PULUMI_CONFIG_PASSPHRASE_FILE": str(own_backend(home) / "passphrase")}


@pytest.mark.parametrize(
    ("url", "own"),
    [
        ("file://~/state/course-vm/pulumi", True),
        ("file://~/state/course-vm/pulumi/", True),
        ("file://~/state/course-vm/other", False),
        ("s3://their-bucket/state/course-vm/pulumi", False),
    ],
)
def test_the_own_backend_is_known_however_its_url_is_written(home: Path, url: str, own: bool) -> None:
    assert is_own_backend(url) is own
    assert is_own_backend(own_backend(home).as_uri())


# The project folder: the same for a checkout and an installed copy, its Pulumi.yaml naming the interpreter.


@pytest.fixture
def installed(home: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The workspace's paths as in an installed copy: the packaged program, a project dir under XDG_CONFIG_HOME."""
    packaged = home / "site-packages" / "provisioner" / "_program"
    packaged.mkdir(parents=True)
    for name in ("Pulumi.yaml", "__main__.py"):
        (packaged / name).write_text((ROOT / name).read_text())
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setattr(workspace, "FROM_CHECKOUT", False)
    monkeypatch.setattr(workspace, "PROGRAM_DIR", packaged)
    return home / "config" / "course-vm"


def test_a_checkout_runs_the_program_in_the_same_project_folder_with_its_venv(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One project folder for `course-vm` and `python -m provisioner` in a checkout: the stacks are the same.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("PYTHONPATH", "/theirs")
    assert project_directory() == home / "config" / "course-vm"
    project = yaml.safe_load((home / "config" / "course-vm" / "Pulumi.yaml").read_text())
    assert project["runtime"]["options"]["virtualenv"] == sys.prefix
    # The program there imports `provisioner` from the checkout.
    assert runtime_environment() == {"PYTHONPATH": f"{ROOT}{os.pathsep}/theirs"}


def test_an_installed_copy_runs_the_program_in_its_own_interpreter(
    installed: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    in_this_process(monkeypatch, stand_in_pulumi(tmp_path).environment)
    opened = Workspace.open()
    assert opened.directory == installed
    project = yaml.safe_load((installed / "Pulumi.yaml").read_text())
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": sys.prefix}}
    assert project["config"] == yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert (installed / "__main__.py").read_text() == (ROOT / "__main__.py").read_text()


def test_an_upgrade_rewrites_the_program_but_keeps_the_stack_files(installed: Path) -> None:
    installed.mkdir(parents=True)
    (installed / "__main__.py").write_text("# an older course-vm's program\n")
    (installed / "Pulumi.dev.yaml").write_text("config:\n  gcp:project: p-123456\n")
    assert project_directory() == installed
    assert (installed / "__main__.py").read_text() == (ROOT / "__main__.py").read_text()
    assert (installed / "Pulumi.dev.yaml").read_text() == "config:\n  gcp:project: p-123456\n"


def test_outside_a_virtualenv_pulumi_is_told_this_python(installed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "prefix", sys.base_prefix)
    assert runtime_environment() == {"PULUMI_PYTHON_CMD": sys.executable}
    # ... and so is the raw pulumi CLI that `course-vm env` sets up.
    assert f"export PULUMI_PYTHON_CMD={shlex.quote(sys.executable)}" in raw_cli_lines(windows=False)
    project_directory()
    assert yaml.safe_load((installed / "Pulumi.yaml").read_text())["runtime"]["options"] == {"toolchain": "pip"}


def test_a_windows_virtualenv_path_stays_whole_in_the_project_file() -> None:
    text = installed_project_file((ROOT / "Pulumi.yaml").read_text(), "C:\\Users\\Ana Li\\pipx\\venvs\\course-vm")
    options = yaml.safe_load(text)["runtime"]["options"]
    assert options["virtualenv"] == "C:\\Users\\Ana Li\\pipx\\venvs\\course-vm"


def test_a_packaged_project_file_without_its_virtualenv_line_is_refused() -> None:
    with pytest.raises(Exception, match=r"^the packaged Pulumi.yaml has no `virtualenv: venv` line\. Fix: reinstall"):
        installed_project_file("name: course-vm\nruntime: python\n", None)


# `course-vm env`: the raw CLI reaches the same stacks the same way.

GENERATED = "as course-vm generates one"


def test_the_env_lines_reach_course_vms_stacks_from_the_raw_cli(tmp_path: Path) -> None:
    # The stand-in answers only on course-vm's own backend and with the passphrase the stack's secrets take.
    pulumi = stand_in_pulumi(tmp_path, {"dev": one_vm()}, passphrase=GENERATED)
    passphrase = tmp_path / "state" / "course-vm" / "pulumi" / "passphrase"
    passphrase.parent.mkdir(parents=True)
    passphrase.write_text(GENERATED + "\n")
    result = run_cli("env", env=pulumi.environment)
    assert result.returncode == 0, result.stderr
    lines = result.stdout
    assert f"export PULUMI_CONFIG_PASSPHRASE_FILE={passphrase}\n" in lines
    assert f"# course-vm's own backend; or once for all shells: pulumi login {passphrase.parent.as_uri()}\n" in lines
    assert lines.endswith(f"cd {project_dir()}\n")
    shell = 'eval "$1"\npulumi stack export --show-secrets --stack dev'
    raw = subprocess.run(
        ["sh", "-c", shell, "sh", lines], env=pulumi.environment, capture_output=True, text=True, check=False
    )
    assert raw.returncode == 0, raw.stderr
    assert walk(json.loads(raw.stdout)["deployment"]).root == one_vm()


def test_without_the_env_lines_the_raw_cli_finds_no_stack(tmp_path: Path) -> None:
    # What the test above rests on: the stand-in refuses a CLI that was not pointed at course-vm's backend.
    pulumi = stand_in_pulumi(tmp_path, {"dev": one_vm()})
    raw = subprocess.run(
        ["pulumi", "stack", "export", "--show-secrets", "--stack", "dev"],
        env=pulumi.environment, capture_output=True, text=True, check=False,
    )  # fmt: skip
    # The CLI's ExitStackNotFound (pkg/cmd/pulumi/cmd/exit_codes.go).
    assert (raw.returncode, raw.stderr) == (6, "error: no stack named 'dev' found\n")


def test_env_lines_for_powershell(home: Path) -> None:
    lines = raw_cli_lines(windows=True)
    assert lines[0] == f"# course-vm's own backend; or once for all shells: pulumi login {own_backend(home).as_uri()}"
    assert f"$env:PULUMI_BACKEND_URL = '{own_backend(home).as_uri()}'" in lines
    assert f"$env:PULUMI_CONFIG_PASSPHRASE_FILE = '{own_backend(home) / 'passphrase'}'" in lines
    assert lines[-1] == f"Set-Location '{project_dir()}'"


def test_env_lines_quote_what_each_shell_would_read_otherwise(
    home: Path, installed: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = home / "it's here"
    monkeypatch.setattr(workspace, "project_dir", lambda: directory)
    assert raw_cli_lines(windows=True)[-1] == f"Set-Location '{home}/it''s here'"
    assert raw_cli_lines(windows=False)[-1] == f"cd {shlex.quote(str(directory))}"


def test_env_lines_of_a_backend_the_user_chose_add_nothing_to_it(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PULUMI_BACKEND_URL", "s3://their-bucket")
    assert raw_cli_lines(windows=False) == [
        "# your Pulumi backend s3://their-bucket: course-vm uses it with your own passphrase settings, as pulumi does",
        f"export PYTHONPATH={shlex.quote(str(ROOT))}",  # the program imports `provisioner` from the checkout
        f"cd {shlex.quote(str(project_dir()))}",
    ]


HOSTILE = "s3://b\n$(touch {mark})\r`touch {mark}`\u2028'; touch {mark}; '\u2019; touch {mark}"


def test_the_posix_env_lines_run_nothing_a_hostile_backend_url_or_folder_holds(
    home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # `eval "$(course-vm env)"`: whatever the backend URL and the project folder hold, sh only reads them.
    mark = tmp_path / "ran"
    monkeypatch.setenv("PULUMI_BACKEND_URL", HOSTILE.format(mark=mark))
    hostile = tmp_path / HOSTILE.format(mark="ran").replace("/", "_")  # `touch ran` in tmp_path: the same mark
    monkeypatch.setattr(workspace, "project_dir", lambda: hostile)
    lines = raw_cli_lines(windows=False)
    assert all("\n" not in line and "\r" not in line and "\u2028" not in line for line in lines[:1]), lines
    result = subprocess.run(
        ["sh", "-c", "\n".join([*lines[:-1], f"{lines[-1]} 2>/dev/null; true"])],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not mark.exists(), f"the env lines ran a command: {lines}"


@pytest.mark.parametrize("quote", ["'", "\u2018", "\u2019", "\u201a", "\u201b"])
def test_the_powershell_env_lines_double_every_quote_powershell_reads(
    home: Path, monkeypatch: pytest.MonkeyPatch, quote: str
) -> None:
    monkeypatch.setattr(workspace, "project_dir", lambda: home / f"a{quote}b")
    assert raw_cli_lines(windows=True)[-1] == f"Set-Location '{home}/a{quote}{quote}b'"
    monkeypatch.setenv("PULUMI_BACKEND_URL", f"s3://b\n{quote}; Remove-Item x")
    assert "\n" not in raw_cli_lines(windows=True)[0]


# The workspace: every process of the CLI starts in it.


def test_without_the_pulumi_cli_the_workspace_says_how_to_install_it(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(home / "empty"))
    with pytest.raises(MissingPrerequisiteError) as raised:
        Workspace.open()
    assert str(raised.value) == (
        f"the Pulumi CLI is not installed, and `up`, `down` and `status` drive it. Fix: {PULUMI_INSTALL}"
    )
    with pytest.raises(MissingPrerequisiteError) as raised:
        Workspace.open(reads_only=True)
    assert str(raised.value) == (
        f"the Pulumi CLI is needed to read the stack's outputs and is not installed. Fix: {PULUMI_INSTALL}"
    )
    assert not (home / "state").exists(), "nothing is set up before the CLI is known to exist"


@pytest.mark.parametrize("command", [["status"], ["down"], ["start"], ["stop"]])
def test_without_the_pulumi_cli_every_command_says_how_to_install_it(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: list[str]
) -> None:
    monkeypatch.setenv("PATH", str(home / "empty"))
    assert main(command) == ExitStatus.MISSING_PREREQUISITE
    err = capsys.readouterr().err
    assert err.startswith("course-vm: the Pulumi CLI ") and f"Fix: {PULUMI_INSTALL}" in err
    assert not (home / "state").exists()


def test_the_workspace_runs_the_cli_on_course_vms_backend_each_line_as_it_comes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pulumi = stand_in_pulumi(tmp_path, {"dev": one_vm(), "fall": {}})
    in_this_process(monkeypatch, pulumi.environment)
    opened = Workspace.open()
    own = tmp_path / "state" / "course-vm" / "pulumi"
    assert (opened.pulumi, opened.directory) == (str(tmp_path / "bin" / "pulumi"), project_dir())
    assert opened.environment == {
        "PULUMI_BACKEND_URL": own.as_uri(),
        "PULUMI_CONFIG_PASSPHRASE_FILE": str(own / "passphrase"),
        "PYTHONPATH": str(ROOT),  # the program in the project folder imports `provisioner` from the checkout
    }
    said: list[str] = []
    result = opened.run(["stack", "ls", "--json"], on_output=said.append)
    assert [entry["name"] for entry in json.loads(result.stdout)] == ["dev", "fall"]
    assert said == result.stdout.splitlines()
    assert (result.args, result.code, result.stderr) == (("stack", "ls", "--json"), 0, "")
    assert pulumi.calls() == [["stack", "ls", "--json"]]


def test_a_failure_of_the_cli_is_a_cli_error_with_its_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pulumi = stand_in_pulumi(tmp_path, {"dev": one_vm()})
    in_this_process(monkeypatch, pulumi.environment)
    with pytest.raises(CliError) as raised:
        Workspace.open().run(["stack", "export", "--stack", "typo"])
    assert raised.value.result.code == 6
    assert raised.value.result.stderr == "error: no stack named 'typo' found\n"
    assert str(raised.value) == "pulumi stack export exited 6: error: no stack named 'typo' found"


def test_extra_variables_reach_the_cli_on_top_of_the_workspaces(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The stand-in serves --event-log only with PULUMI_DEBUG_COMMANDS, as the real CLI does.
    pulumi = stand_in_pulumi(tmp_path, {"dev": one_vm()})
    in_this_process(monkeypatch, pulumi.environment)
    opened = Workspace.open()
    args = ["preview", "--stack", "dev", "--event-log", str(tmp_path / "events.jsonl")]
    with pytest.raises(CliError, match="unknown flag: --event-log"):
        opened.run(args)
    assert opened.run(args, extra={"PULUMI_DEBUG_COMMANDS": "true"}).stdout == "Previewing update (dev)\n"


def test_each_line_reaches_on_output_while_the_cli_still_runs(tmp_path: Path) -> None:
    # A CLI that says one line, then waits for that line to have been passed on before it says the next.
    go = tmp_path / "go"
    cli = tmp_path / "pulumi"
    cli.write_text(
        '#!/bin/sh\necho first\ni=0\nwhile [ ! -e "$GO" ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i+1)); done\n'
        '[ -e "$GO" ] || exit 3\necho second\n'
    )
    cli.chmod(0o755)
    said: list[str] = []

    def on_output(line: str) -> None:
        said.append(line)
        go.touch()

    result = Workspace(str(cli), tmp_path, {"GO": str(go)}).run(["version"], on_output)
    assert (result.code, said) == (0, ["first", "second"])


def test_stack_files_a_checkout_kept_are_named_with_the_move_that_keeps_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A checkout was once its own project folder: its stacks' settings are not silently left behind.
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "Pulumi.yaml").write_text("name: course-vm\n")
    (checkout / "Pulumi.dev.yaml").write_text("config:\n  gcp:project: p-123456\n")
    with pytest.raises(CourseVmError) as raised:
        workspace.refuse_stack_files_left_in_checkout(checkout=checkout, windows=True)
    assert str(raised.value).endswith(
        f"Fix: move them there: New-Item -ItemType Directory -Force '{project_dir()}' | Out-Null; "
        f"Move-Item '{checkout / 'Pulumi.dev.yaml'}' '{project_dir()}'"
    )
    with pytest.raises(CourseVmError) as raised:
        workspace.refuse_stack_files_left_in_checkout(checkout=checkout, windows=False)
    message = str(raised.value)
    assert message.startswith(f"the stack settings Pulumi.dev.yaml are in the checkout {checkout}")
    fix = message.partition("Fix: move them there: ")[2]
    subprocess.run(["sh", "-c", fix], check=True)
    assert (project_dir() / "Pulumi.dev.yaml").read_text() == "config:\n  gcp:project: p-123456\n"
    workspace.refuse_stack_files_left_in_checkout(checkout=checkout, windows=False)  # nothing left: no error
