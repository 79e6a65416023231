"""What the Pulumi program leaves in a stack for others to read: resource names, types, outputs and their records."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from provisioner.errors import CourseVmError

DEFAULT_STACK = "dev"
"""The stack every command uses unless told otherwise (`--stack`)."""


def command(verb: str, stack: str) -> str:
    """`course-vm VERB` for STACK, as a Fix line suggests it: `--stack` only when it is not the default."""
    return f"course-vm {verb}" + ("" if stack == DEFAULT_STACK else f" --stack {stack}")


PROBLEMS_VARIABLE = "COURSE_VM_PROBLEMS_FILE"
"""The file the program writes its settings' problems to as JSON, for the driver to read as data (no text scraped)."""

# The resources the program registers, as the engine's URNs and the exported state name them.
COURSE = "course-vm"
"""The CourseVm's name (__main__.py): a student's VM is `COURSE-STUDENT`, a stack's one VM `COURSE`."""
COURSE_IMAGE = "course-image"
"""The CourseImage's name in a bake stack (`image bake`)."""
IMAGE_NAMESPACE = "course-vm-image"
"""The config namespace of a bake stack: its phase, family, source disk and manifest (see gcp/course_image.py)."""
STACK_TYPE = "pulumi:pulumi:Stack"
COURSE_VM_TYPE = "course-vm:gcp:CourseVm"
STUDENT_VM_TYPE = "course-vm:gcp:StudentVm"
COURSE_IMAGE_TYPE = "course-vm:gcp:CourseImage"
INSTANCE_TYPE = "gcp:compute/instance:Instance"
ADDRESS_TYPE = "gcp:compute/address:Address"
HOME_DISK_TYPE = "gcp:compute/disk:Disk"
VERIFICATION_TYPE = "pulumi-python:dynamic:Resource"
"""The type of every dynamic resource; the program's only one is a VM's verification (`NAME-verify`)."""
INSTANCE_ROLE, VERIFICATION_ROLE, ADDRESS_ROLE, HOME_DISK_ROLE = "vm", "verify", "ip", "home"
"""A StudentVm's children are named `VM-ROLE` after it."""


def vm_name(student: str) -> str:
    """The StudentVm's name for STUDENT ("" for a stack's one VM)."""
    return f"{COURSE}-{student}" if student else COURSE


def urn_type(urn: str) -> str:
    """The type of the resource URN names: `urn:pulumi:STACK::PROJECT::PARENT-TYPE$...$TYPE::NAME`."""
    parts = urn.split("::", 3)
    return parts[2].rsplit("$", 1)[-1] if len(parts) == 4 else ""


def urn_name(urn: str) -> str:
    """The name of the resource URN names."""
    return urn.rsplit("::", 1)[-1]


def student_of(vm_urn: str, parent: str) -> str:
    """The student whose StudentVm VM_URN is ("" for a stack's one VM), given its PARENT's URN (the CourseVm's)."""
    name, course = urn_name(vm_urn), urn_name(parent) if parent else COURSE
    return name.removeprefix(f"{course}-") if name != course else ""


def role_of(urn: str, type_: str) -> tuple[str, str] | None:
    """(student, INSTANCE_ROLE or VERIFICATION_ROLE) for a VM's instance or verification; None for anything else."""
    name = urn_name(urn)
    for role, wanted in ((VERIFICATION_ROLE, VERIFICATION_TYPE), (INSTANCE_ROLE, INSTANCE_TYPE)):
        if type_ == wanted and name.endswith(f"-{role}"):
            vm = name.removesuffix(f"-{role}")
            return (vm.removeprefix(f"{COURSE}-") if vm != COURSE else ""), role
    return None


# The stack's outputs: a stack's one VM exports its outputs at the top, a class `students` (name -> a VM's).
PROJECT_OUTPUT = "project"
STUDENTS_OUTPUT = "students"


FORWARDS_BEFORE = ("8888",)
"""What a stack's outputs from before `forwardPorts` forward: Jupyter's port alone, as its Host block did then."""


def _key(name: str) -> Any:
    return field(default="", metadata={"key": name})


@dataclass(frozen=True)
class VmOutputs:
    """One VM as the stack's outputs (or its StudentVm's own outputs in the state) describe it.

    Values come from the state, which anyone who can write the backend can change: each is a
    string (or a tuple of them), but none is checked here. What uses one checks it there (an ssh
    Host block is built from validated fields, never from `ssh_config`).
    """

    ip: str = _key("ip")
    """The static external address; under iap the internal one, which nothing outside reaches."""
    proxy_command: str = _key("proxyCommand")
    """Under iap the ProxyCommand that reaches the VM by its instance name; "" under firewall."""
    ssh_command: str = _key("sshCommand")
    ssh_config: str = _key("sshConfig")
    instance_name: str = _key("instanceName")
    zone: str = _key("zone")
    username: str = _key("username")
    identity_file: str = _key("identityFile")
    """The private key course-vm logs in with (a path: the key never enters state)."""
    student_public_key: str = _key("studentPublicKey")
    """A class student's own key, when they brought one (`identity_file` is then the instructor's)."""
    host_keys: tuple[str, ...] = field(default=(), metadata={"key": "hostKeys"})
    """The pinned host keys (`TYPE BASE64`); empty with verify=false."""
    host_key_fingerprint: str = _key("hostKeyFingerprint")
    known_hosts: str = _key("knownHosts")
    known_hosts_file: str = _key("knownHostsFile")
    forward_ports: tuple[str, ...] = field(default=FORWARDS_BEFORE, metadata={"key": "forwardPorts"})
    """The VM's ports its Host block forwards, each `PORT` or `LOCAL:REMOTE` (checked where a block is written)."""
    forward_agent: bool = field(default=False, metadata={"key": "forwardAgent"})
    """Whether its Host block forwards the laptop's ssh agent."""

    @property
    def iap(self) -> bool:
        """Whether the VM is reached through Identity-Aware Proxy (it has no external address)."""
        return bool(self.proxy_command)

    @property
    def ssh_host(self) -> str:
        """What ssh connects to: the address, or under iap the instance name (which the pins are under too)."""
        return self.instance_name if self.iap else self.ip

    @classmethod
    def parse(cls, raw: Mapping[str, Any]) -> VmOutputs:
        """The VM RAW describes (output key -> value); a key it lacks is "" (or no host keys)."""
        values: dict[str, Any] = {}
        for item in fields(cls):
            value = raw.get(item.metadata["key"])
            if item.name in ("host_keys", "forward_ports"):
                values[item.name] = tuple(map(str, value)) if isinstance(value, list | tuple) else item.default
            elif item.name == "forward_agent":
                values[item.name] = value is True
            else:
                values[item.name] = "" if value is None else str(value)
        return cls(**values)


def has_address(raw: Mapping[str, Any]) -> bool:
    """Whether RAW, one VM's outputs (or a stack's one VM's, at the top), names the VM's address: a StudentVm
    registers its outputs when its update finished, so one without them did not."""
    return bool(raw.get("ip"))


def named_in(root: Mapping[str, Any]) -> set[str]:
    """The students ROOT (a stack's outputs) names a VM of ("" for a stack's one VM), unchecked: for what is
    only looked up by name (the `Host` entries to remove), never for a file or folder."""
    students = root.get(STUDENTS_OUTPUT)
    listed = {str(name) for name in students} if isinstance(students, Mapping) else set()
    return listed or ({""} if has_address(root) else set())


def vm_exports(**values: object) -> dict[str, object]:
    """The stack outputs of one VM, by output key, from VALUES named as VmOutputs' fields (the program's
    Pulumi Outputs). Raises TypeError for a name VmOutputs has no field for."""
    keys = {item.name: item.metadata["key"] for item in fields(VmOutputs)}
    unknown = set(values) - set(keys)
    if unknown:
        raise TypeError(f"no VM output {', '.join(sorted(unknown))}")
    return {keys[name]: value for name, value in values.items()}


CHANGED = (
    "someone changed the stack's outputs or state, so course-vm acts on none of its VMs. Fix: check who else "
    "can write to the stack's Pulumi backend, then run `course-vm up` for the stack to write its outputs again "
    "from the roster"
)


@dataclass(frozen=True)
class StackOutputs:
    """A stack's VMs, one shape for a stack's one VM and for a class, read once where the driver reads the state."""

    project: str = ""
    vms: Mapping[str, VmOutputs] = field(default_factory=dict)
    """Each VM by student ("" for a stack's one VM), in the outputs' order: those that finished."""
    is_class: bool = False
    """Whether the stack is a class (its VMs are named by student)."""
    unfinished: frozenset[str] = frozenset()
    """The students whose VM is in the state without outputs: its first update did not finish."""

    @classmethod
    def parse(
        cls,
        root: Mapping[str, Any],
        name_problem: Callable[[str], str | None],
        *,
        own: Mapping[str, Mapping[str, Any]] | None = None,
        unfinished: frozenset[str] = frozenset(),
        project: str = "",
    ) -> StackOutputs:
        """The VMs of ROOT (the stack's outputs as the program exports them), each VM as its OWN outputs
        in the state have it when they are given (see driver/state.py: a failed update keeps the stack's
        outputs as they were, but each StudentVm's own are current): a student the state no longer
        holds is left out, one only the state holds is added. UNFINISHED are in the state without
        outputs; PROJECT is the one the VMs' resources are in, for outputs that name none.

        Raises CourseVmError when `students` is no mapping, or names a student no roster can hold
        (NAME_PROBLEM says why): anyone who can write the state can write any name there, and `..`
        would be a hand-out folder.
        """
        students = root.get(STUDENTS_OUTPUT)
        if students and not isinstance(students, Mapping):
            raise CourseVmError(f"the stack's `{STUDENTS_OUTPUT}` output is no mapping of names to VMs: {CHANGED}")
        raw, is_class = _raw_vms(root, students or {}, own, unfinished)
        for name in raw if is_class else ():
            why = name_problem(name)
            if why:
                shown = repr(name) if len(repr(name)) <= 40 else repr(name)[:37] + "..."
                raise CourseVmError(
                    f"the stack's outputs name a student {shown}, which is no student's name ({why}): {CHANGED}"
                )
        vms = {name: VmOutputs.parse(vm if isinstance(vm, Mapping) else {}) for name, vm in raw.items()}
        return cls(str(root.get(PROJECT_OUTPUT) or project), vms, is_class, frozenset(unfinished))

    def require_vms(self, stack_name: str | None) -> None:
        """Raise CourseVmError when the stack has no VM to act on: no outputs yet (a class whose first `up`
        finished for no student), or a stack's one VM without the outputs that reach it."""
        if self.is_class and self.vms:
            return
        vm = self.vms.get("", VmOutputs())
        needed = (("ip", vm.ip), ("username", vm.username), ("identityFile", vm.identity_file))
        missing = [key for key, value in needed if not value]
        if missing:
            again = f"course-vm up --stack {stack_name}" if stack_name else "course-vm up"
            raise CourseVmError(f"the stack has no {', '.join(missing)} output. Fix: `{again}` first")

    def chosen(self, only: Sequence[str] | None, stack_name: str | None) -> dict[str, VmOutputs]:
        """The VMs of the students ONLY names (every VM when None), by student. Raises CourseVmError for a
        name the stack has no VM of."""
        unknown = [name for name in only or () if name not in self.vms]
        if unknown:
            known = ", ".join(name for name in self.vms if name) or "(none: the stack is not a class)"
            # A student on the roster whose first `up` did not finish has no VM in the stack yet.
            raise CourseVmError(
                f"no student {', '.join(unknown)} among the stack's VMs. Fix: one of {known} (a student just added "
                f"to the roster, or whose VM's first `course-vm up` did not finish, has none yet: run "
                f"`{command('up', stack_name or DEFAULT_STACK)}`)"
            )
        return {name: self.vms[name] for name in only or self.vms}


def _raw_vms(
    root: Mapping[str, Any],
    students: Mapping[str, Any],
    own: Mapping[str, Mapping[str, Any]] | None,
    unfinished: frozenset[str],
) -> tuple[dict[str, Any], bool]:
    """Each VM's raw outputs by student, and whether the stack is a class (see StackOutputs.parse)."""
    named = {name: vm for name, vm in (own or {}).items() if name}
    if own is not None and (named or unfinished - {""}):
        known = set(own) | unfinished
        return {**{str(n): vm for n, vm in students.items() if n in known}, **named}, True
    if students:
        return {str(name): vm for name, vm in students.items()}, True
    merged = {**root, **(own or {}).get("", {})}
    return ({"": merged} if has_address(merged) else {}), False
