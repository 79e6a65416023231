"""A stand-in for the Pulumi CLI, which cannot be installed here: one program serving every command course-vm runs.

It keeps stacks in a JSON file a test describes (each stack's outputs, the state `stack export`
prints, its config), answers as the real CLI does where course-vm reads it (`stack export`,
`config --json`, the `error:` lines of a missing stack or a wrong passphrase, the event log of
`preview`, `up` and `destroy`), records every command line it was run with, and fails the
commands a test tells it to fail. The engine itself is simulated only in part: a preview reports the
events the test gives (created anew in a stack whose state is empty), `up` makes the outputs the test
gives the stack's, and `destroy` deletes what the stack's state holds (pulumi_events.destroy_events).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from provisioner.paths import project_dir
from tests.conftest import ROOT
from tests.support.cli import in_this_process
from tests.support.pulumi_events import (
    created_anew,
    destroy_events,
    diagnostics_shown,
    engine_failed,
    engine_log,
    error_diagnostic,
)
from tests.support.pulumi_state import STACK_CONFIG, exported_deployment

EXIT_ERROR, EXIT_STACK_NOT_FOUND = 1, 6
"""The CLI's exit statuses (pkg/cmd/pulumi/cmd/exit_codes.go ExitCodeFor): 1 for any error not typed otherwise,
the engine's failure (a bail) too; 6 for a StackNotFoundError. (CLIs before March 2026 exited 255 for all.)"""

ENGINE_WORDS = ("update failed", "preview failed", "update canceled", "preview canceled",
                "Program failed with an unhandled exception", "an unhandled error occurred")  # fmt: skip
"""What only the engine says, in its events (and the progress display on stdout), never the CLI on stderr."""


class StandInError(Exception):
    """The stand-in CLI exits CODE with these lines on stderr (and what it printed before on stdout)."""

    def __init__(self, stderr: str, stdout: str = "", code: int = EXIT_ERROR) -> None:
        super().__init__(stderr)
        self.stderr, self.stdout, self.code = stderr, stdout, code


def verb_of(args: Sequence[str]) -> str:
    """The command of ARGS as tests name it: `stack export`, `config set-all`, `config`, `preview`, `up`, ..."""
    words = [a for a in args if not a.startswith("-")]
    if words[:1] == ["stack"] or (words[:1] == ["config"] and len(words) > 1 and words[1] in ("rm", "set-all")):
        return " ".join(words[:2])
    return words[0] if words else ""


FLAGS: Mapping[str, frozenset[str]] = {
    verb: frozenset(flags.split())
    for verb, flags in {
        "stack export": "--stack --show-secrets --file --version",
        "stack init": "--stack --secrets-provider --copy-config-from --no-select",
        "stack select": "--stack --create --secrets-provider",
        "stack ls": "--json --all --organization --project --tag",
        "config": "--stack --json --show-secrets --config-file --open",
        "config rm": "--stack --path --config-file",
        "config set-all": "--stack --path --plaintext --secret --json --config-file",
        "preview": "--stack --event-log --diff --json --refresh",
        "up": "--stack --event-log --yes --skip-preview --continue-on-error --diff --json --refresh",
        "destroy": "--stack --event-log --yes --skip-preview --preview-only --continue-on-error --diff --refresh",
    }.items()
}
"""The flags each command the stand-in serves has in the real CLI (pkg/cmd/pulumi/...; --event-log only with
PULUMI_DEBUG_COMMANDS): any other one fails as cobra fails, so a misspelt flag cannot pass the tests."""


def option(args: Sequence[str], name: str) -> str | None:
    return args[args.index(name) + 1] if name in args else None


class Engine:
    """The stand-in's answers, on the state in STATE (see StandInPulumi), for the environment ENV."""

    def __init__(self, state: dict[str, Any], env: Mapping[str, str]) -> None:
        self.state, self.env = state, env

    def run(self, args: list[str]) -> str:
        """What `pulumi ARGS` prints on stdout; raises StandInError as the real CLI fails."""
        verb = verb_of(args)
        for flag in (a.split("=", 1)[0] for a in args if a.startswith("--")):
            # The real CLI has --event-log only when PULUMI_DEBUG_COMMANDS is set (pkg/cmd/pulumi/operations/up.go).
            if flag not in FLAGS.get(verb, ()) or (flag == "--event-log" and not self.env.get("PULUMI_DEBUG_COMMANDS")):
                raise StandInError(f"error: unknown flag: {flag}\n")
        failure = self.state["fail"].get(verb)
        if failure is not None and self.applies(failure, args):
            self.fail(args, failure)
        if verb == "stack init":
            name = option(args, "--stack") or [a for a in args if not a.startswith("-")][2]
            self.state["stacks"][name] = {"outputs": {}, "deployment": None}
            self.state["config"].setdefault(name, {})
            self.state["current"] = name  # `stack init` selects the new stack
            return ""
        if verb == "stack ls":
            current = self.state["current"]
            return json.dumps([{"name": name, "current": name == current} for name in self.state["stacks"]])
        stack = option(args, "--stack") or self.state["current"]
        if stack is None:
            raise StandInError("error: no stack selected; please use `pulumi stack select` to choose one\n")
        self.require(stack, secrets="--show-secrets" in args)
        if verb == "stack select":
            self.state["current"] = stack
            return ""
        return self.on_stack(verb, stack, args)

    def on_stack(self, verb: str, stack: str, args: list[str]) -> str:
        found = self.state["stacks"][stack]
        if verb == "stack export":
            return json.dumps(found["deployment"] or {"version": 3, "deployment": {}}, indent=4)
        if verb == "config":
            config, secret = self.state["config"].get(stack, {}), self.state["secret"].get(stack, [])
            return json.dumps({key: {"value": value, "secret": key in secret} for key, value in config.items()})
        if verb in ("config rm", "config set-all"):
            self.configure(verb, stack, args)
            return ""
        if verb == "preview":
            self.log(args, self.state["events"])
            return "Previewing update (" + stack + ")\n"
        if verb == "up":
            self.log(args, self.state["update_events"])
            config = self.state["config"].get(stack, {})
            chosen = [
                o
                for when, o in self.state["outputs_when"].items()
                if config.get(when.split("=", 1)[0]) == when.split("=", 1)[1]
            ]
            outputs = chosen[0] if chosen else self.state["next_outputs"]
            found.update(outputs=outputs, deployment=exported_deployment(stack, outputs) if outputs else None)
            return f"Updating ({stack})\n"
        if verb == "destroy":
            self.log(args, destroy_events(found["deployment"], planning="--preview-only" in args))
            if "--preview-only" in args:
                return f"Previewing destroy ({stack})\n"
            found.update(outputs={}, deployment=None)
            return f"Destroying ({stack})\n"
        raise StandInError(f"error: the stand-in does not serve `pulumi {' '.join(args)}`\n")

    def applies(self, failure: Mapping[str, Any], args: list[str]) -> bool:
        """Whether FAILURE is for this run: always, or (with "when": "KEY=VALUE") while the stack's config has that."""
        when = failure.get("when")
        if when is None:
            return True
        key, _, value = str(when).partition("=")
        stack = option(args, "--stack") or self.state["current"]
        return bool(self.state["config"].get(stack, {}).get(key) == value)

    def require(self, stack: str, *, secrets: bool) -> None:
        """Fail as the CLI does for a stack this backend does not have, or secrets it cannot decrypt."""
        backend = self.env.get("PULUMI_BACKEND_URL")
        if stack not in self.state["stacks"] or backend != self.state["backend"]:
            raise StandInError(f"error: no stack named '{stack}' found\n", code=EXIT_STACK_NOT_FOUND)
        if not (secrets and self.state["stacks"][stack]["deployment"]):
            return
        given = self.env.get("PULUMI_CONFIG_PASSPHRASE")
        if given is None and self.env.get("PULUMI_CONFIG_PASSPHRASE_FILE"):
            given = Path(self.env["PULUMI_CONFIG_PASSPHRASE_FILE"]).read_text().strip()
        if given is None:
            raise StandInError(
                'error: constructing secrets manager of type "passphrase": passphrase must be set with '
                "PULUMI_CONFIG_PASSPHRASE or PULUMI_CONFIG_PASSPHRASE_FILE environment variables\n"
            )
        expected = self.state["passphrase"]
        if expected is not None and given != expected:
            raise StandInError('error: constructing secrets manager of type "passphrase": incorrect passphrase\n')

    def configure(self, verb: str, stack: str, args: list[str]) -> None:
        """`config rm KEY` and `config set-all [--path] --plaintext KEY=VALUE...`, with Pulumi's key rules: a key
        without a namespace is the project's, and with --path `KEY[N]` sets a list's item."""
        config = self.state["config"].setdefault(stack, {})

        def full(key: str) -> str:
            return key if ":" in key else "course-vm:" + key

        if verb == "config rm":
            config.pop(full(next(a for a in args[2:] if not a.startswith("-"))), None)
            return
        pairs = [(a, args[i + 1]) for i, a in enumerate(args) if a in ("--plaintext", "--secret")]
        secret = self.state["secret"].setdefault(stack, [])
        for kind, pair in pairs:
            key, _, value = pair.partition("=")
            if kind == "--secret":
                secret.append(full(key))
            name, _, index = full(key).rstrip("]").partition("[")
            if "--path" in args and index:
                items = json.loads(config.get(name) or "[]")
                items += [None] * (int(index) + 1 - len(items))
                items[int(index)] = value
                config[name] = json.dumps(items)
            else:
                config[full(key)] = value

    def log(self, args: list[str], events: list[dict[str, Any]], *, failed: bool = False) -> None:
        """Write EVENTS as the CLI writes its event log: the file made anew (O_TRUNC), a prelude first, a summary
        and a cancel event last, the events numbered (see pulumi_events.engine_log)."""
        path = option(args, "--event-log")
        stack = self.state["stacks"].get(option(args, "--stack") or self.state["current"]) or {}
        if not stack.get("deployment"):
            events = created_anew(events)  # the stack resource, the providers and all: nothing is there yet
        if path:
            written = engine_log(events, preview=verb_of(args) == "preview" or "--preview-only" in args, failed=failed)
            with open(path, "w") as log:
                log.writelines(json.dumps(event) + "\n" for event in written)

    def fail(self, args: list[str], failure: Mapping[str, Any]) -> None:
        """Fail as FAILURE says: its events logged, the state it leaves, the program's problems handed over; with
        "cancelled" (a number of lines), only once Ctrl-C came, saying that many lines as it cancels."""
        if "cancelled" in failure:
            self.cancel_on_ctrl_c(args, failure)
        events, stdout, stderr = failure.get("events", []), failure.get("stdout", ""), failure.get("stderr", "")
        preview = verb_of(args) == "preview" or "--preview-only" in args
        stack = option(args, "--stack") or ""
        self.refuse_invented(stderr, preview=preview)
        if any(e.get("diagnosticEvent", {}).get("severity") == "error" for e in events):
            # The engine said why (a step or the program failed): it ends with its own error, the CLI's progress
            # display shows its diagnostics on stdout, and the CLI bails, saying nothing on stderr
            # (pkg/cmd/pulumi/cmd/cmd.go processCmdErrors, result.IsBail).
            if stderr:
                raise StandInError(f"stand-in: the CLI writes nothing on stderr as the engine fails, not {stderr!r}\n")
            events = engine_failed(events, preview=preview)
            stdout += diagnostics_shown(events, stack)
        self.log(args, events, failed=True)
        if "deployment" in failure:
            # What the engine checkpointed before the update failed: the steps that completed.
            self.state["stacks"][stack]["deployment"] = failure["deployment"]
        problems, path = failure.get("problems"), self.env.get("COURSE_VM_PROBLEMS_FILE")
        if problems and path:
            Path(path).write_text(json.dumps(problems))  # what the program hands over (__main__.py)
        raise StandInError(stderr, stdout)

    @staticmethod
    def refuse_invented(stderr: str, *, preview: bool) -> None:
        """Refuse a test's STDERR the real CLI never writes: the engine's words (its events say them), or a lock
        error for a preview, which takes no lock on a DIY backend (diyBackend.Preview; Destroy with PreviewOnly)."""
        said = [words for words in ENGINE_WORDS if words in stderr]
        if said:
            raise StandInError(f"stand-in: the CLI never writes {said[0]!r} on stderr: give the engine's events\n")
        if preview and "currently locked" in stderr:
            raise StandInError("stand-in: a preview takes no lock, so it never fails for one\n")

    def cancel_on_ctrl_c(self, args: list[str], failure: Mapping[str, Any]) -> None:
        """As the CLI does on Ctrl-C: the events so far, then on SIGINT line after line while it cancels; the engine
        ends with its own `update canceled` (`preview canceled`, deploymentExecutor.reportExecResult), a bail: the
        CLI says nothing on stderr."""
        path = option(args, "--event-log")
        preview = verb_of(args) == "preview" or "--preview-only" in args
        self.refuse_invented(failure.get("stderr", ""), preview=preview)
        closing = error_diagnostic(("preview" if preview else "update") + " canceled")
        written = engine_log([*failure.get("events", []), closing], preview=preview, failed=True)
        with open(path or os.devnull, "w") as log:  # all but the summary and the cancel event, which end it
            log.writelines(json.dumps(event) + "\n" for event in written[:-2])
        try:  # before the line that tells the test to press Ctrl-C
            print(f"Updating ({option(args, '--stack')})", flush=True)
            time.sleep(120)
        except KeyboardInterrupt:
            for number in range(int(failure["cancelled"])):
                print(f"cancelling: waiting for the running operations to finish ({number})")
            with open(path or os.devnull, "a") as log:
                log.writelines(json.dumps(event) + "\n" for event in written[-2:])
            raise StandInError(failure.get("stderr", "")) from None
        raise StandInError("error: the stand-in waited 120 s for a Ctrl-C that did not come\n")


def write_stack_files(state: Mapping[str, Any], directory: Path) -> None:
    """Keep each stack's config in DIRECTORY's `Pulumi.STACK.yaml` as the real CLI keeps it in the project folder
    (what `up` reads before the CLI runs): a list set with --path as a YAML list, a secret as `secure:` ciphertext,
    and the passphrase's salt, which `stack init` writes. A file of a stack the backend has not is left alone."""
    for name in state["stacks"]:
        path = directory / f"Pulumi.{name}.yaml"
        secret = state["secret"].get(name, [])
        config: dict[str, Any] = {}
        for key, value in state["config"].get(name, {}).items():
            try:
                listed = json.loads(value) if isinstance(value, str) and value.startswith("[") else None
            except ValueError:
                listed = None
            config[key] = {"secure": "v1:stand-in"} if key in secret else listed if listed is not None else value
        directory.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump({"encryptionsalt": "v1:stand-in", **({"config": config} if config else {})}))


def main(state_file: Path, calls_file: Path, argv: list[str]) -> int:
    """Run the stand-in as `pulumi ARGV` on STATE_FILE, recording ARGV in CALLS_FILE; its exit status."""
    args = [a for a in argv if a != "--non-interactive"]
    with open(calls_file, "a") as calls:
        calls.write(json.dumps(args) + "\n")
    state = json.loads(state_file.read_text())
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C, as the CLI handles it: see cancel_on_ctrl_c
    engine = Engine(state, os.environ)
    try:
        sys.stdout.write(engine.run(args))
        return 0
    except StandInError as failed:
        sys.stdout.write(failed.stdout)
        sys.stderr.write(failed.stderr)
        return failed.code
    finally:
        state_file.write_text(json.dumps(state))
        write_stack_files(state, project_dir())


@dataclass
class StandInPulumi:
    """An environment whose `pulumi` is the stand-in, and what the stand-in keeps and recorded."""

    environment: dict[str, str]
    state_file: Path
    calls_file: Path

    def selected(self) -> str | None:
        """The stack the stand-in CLI has selected now (`stack select`, `stack init`)."""
        selected = json.loads(self.state_file.read_text())["current"]
        return str(selected) if selected is not None else None

    def calls(self) -> list[list[str]]:
        """Each command line the stand-in was run with, without --non-interactive."""
        if not self.calls_file.exists():
            return []
        return [json.loads(line) for line in self.calls_file.read_text().splitlines()]

    def verbs(self) -> list[str]:
        return [verb_of(call) for call in self.calls()]

    def config(self, stack: str) -> dict[str, str]:
        """The stack's config as the stand-in holds it now."""
        return dict(json.loads(self.state_file.read_text())["config"].get(stack, {}))

    def outputs(self, stack: str) -> dict[str, Any]:
        """The stack's outputs as the stand-in holds them now."""
        return dict(json.loads(self.state_file.read_text())["stacks"][stack]["outputs"])


def stand_in_pulumi(
    tmp_path: Path,
    stacks: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    deployments: Mapping[str, Mapping[str, Any]] | None = None,
    events: list[dict[str, Any]] | None = None,
    update_events: list[dict[str, Any]] | None = None,
    next_outputs: Mapping[str, Any] | None = None,
    outputs_when: Mapping[str, Mapping[str, Any]] | None = None,
    secrets: Mapping[str, Sequence[str]] | None = None,
    fail: Mapping[str, Mapping[str, Any]] | None = None,
    config: Mapping[str, Mapping[str, str]] | None = None,
    passphrase: str | None = None,
    selected: str | None = None,
) -> StandInPulumi:
    """An environment (HOME and XDG_STATE_HOME in TMP_PATH, on course-vm's own backend there) whose
    `pulumi` is the stand-in, with STACKS (name -> the outputs the program exported; default one stack
    `dev` without any), each stack's state built from its outputs unless DEPLOYMENTS gives it (what
    `stack export` prints: see pulumi_state.exported_deployment).

    `preview` reports EVENTS, `up` reports UPDATE_EVENTS (in a stack whose state holds no resource, what
    they say is `same` created, as pulumi_events.created_anew) and makes NEXT_OUTPUTS the stack's outputs
    (or, OUTPUTS_WHEN the stack's config has one of its KEY=VALUE, its outputs); `destroy` (and its
    --preview-only) deletes what the stack's state holds (pulumi_events.destroy_events); each command of
    FAIL (e.g. "up": {"stderr": ...}) fails with that stderr (the CLI's own error) and exit 1 (with
    "when": "KEY=VALUE", only while the stack's config has it), after logging its "events", leaving its
    "deployment" and handing over its "problems" as the program does; with "cancelled": N, only after a
    Ctrl-C, saying N lines then. Where its events hold an error diagnostic the engine failed: they end
    with the engine's `update failed` if a step failed (a resOpFailedEvent), its diagnostics are shown on
    stdout and nothing on stderr (a test that gives a stderr then is refused, and so is one whose stderr says
    what only the engine says, or a lock error for a preview). A missing stack exits 6.
    CONFIG: stack -> key -> value (default: STACK_CONFIG for each stack); SECRETS: stack -> the keys of its
    config kept encrypted (`config set-all --secret` adds to them). PASSPHRASE: the one the stacks' secrets
    take (default: any). SELECTED: the stack the CLI has selected (`pulumi stack select`), for a command
    given no --stack (default: none).
    `up`'s other prerequisites are there too: a stand-in gcloud on PATH (never run) and
    application-default credentials where gcloud keeps them.
    """
    stacks = {"dev": {}} if stacks is None else stacks
    state_dir = tmp_path / "state"
    built = {name: exported_deployment(name, outputs) if outputs else None for name, outputs in stacks.items()}
    state = {
        "stacks": {name: {"outputs": dict(o), "deployment": (deployments or {}).get(name) or built[name]}
                   for name, o in stacks.items()},
        "config": {name: dict(STACK_CONFIG) for name in stacks} if config is None else dict(config),
        "events": events or [], "update_events": update_events or [], "next_outputs": dict(next_outputs or {}),
        "outputs_when": dict(outputs_when or {}),
        "secret": {name: list(keys) for name, keys in (secrets or {}).items()},
        "fail": dict(fail or {}), "passphrase": passphrase, "current": selected,
        "backend": (state_dir / "course-vm" / "pulumi").as_uri(),
    }  # fmt: skip
    state_file, calls_file = tmp_path / "pulumi-stand-in.json", tmp_path / "pulumi-calls.jsonl"
    state_file.write_text(json.dumps(state))
    write_stack_files(state, project_dir())
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    pulumi = bin_dir / "pulumi"
    pulumi.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
        "from pathlib import Path\nfrom tests.support.stand_in_pulumi import main\n"
        f"sys.exit(main(Path({str(state_file)!r}), Path({str(calls_file)!r}), sys.argv[1:]))\n"
    )
    pulumi.chmod(0o755)
    return StandInPulumi(_environment(tmp_path, bin_dir), state_file, calls_file)


def _environment(tmp_path: Path, bin_dir: Path) -> dict[str, str]:
    # What `up` checks for before anything else (provisioner/cli/prerequisites.py): gcloud on PATH
    # (a stand-in that is never run) and application-default credentials where gcloud keeps them.
    gcloud = bin_dir / "gcloud"
    gcloud.write_text("#!/bin/sh\necho 'stand-in gcloud: not for use' >&2\nexit 1\n")
    gcloud.chmod(0o755)
    adc = tmp_path / ".config" / "gcloud" / "application_default_credentials.json"
    adc.parent.mkdir(parents=True, exist_ok=True)
    adc.write_text('{"type": "authorized_user", "client_id": "stand-in", "client_secret": "x", "refresh_token": "x"}\n')
    environment = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "XDG_STATE_HOME": str(tmp_path / "state")}
    for name in ("GOOGLE_APPLICATION_CREDENTIALS", "CLOUDSDK_CONFIG", "PULUMI_BACKEND_URL", "PULUMI_CONFIG_PASSPHRASE",
                 "PULUMI_CONFIG_PASSPHRASE_FILE", "PULUMI_DEBUG_COMMANDS", "COURSE_VM_PROBLEMS_FILE"):  # fmt: skip
        environment.pop(name, None)
    environment["PULUMI_HOME"] = str(tmp_path / "pulumi-home")  # not logged in anywhere
    environment["HOME"] = str(tmp_path)
    return environment


def stand_in_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stacks: Mapping[str, Mapping[str, Any]] | None = None, **given: Any
) -> StandInPulumi:
    """stand_in_pulumi (STACKS, GIVEN: see there) for course-vm run in this process: `main`, or a flow called
    directly; HOME is TMP_PATH. Called again on the same TMP_PATH, it stands for the stacks it is given then."""
    pulumi = stand_in_pulumi(tmp_path, stacks, **given)
    in_this_process(monkeypatch, pulumi.environment)
    return pulumi
