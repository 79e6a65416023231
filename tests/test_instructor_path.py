"""Issue 13's instructor path, end to end as far as these machines allow: a roster of thirty (some
with their own keys) under sshAccess iap, the program run under the Pulumi SDK's mocks, the
quotas it needs, and every student's hand-out as OpenSSH reads it. The parts are tested on their
own in their modules' tests; this shows they fit together."""

from __future__ import annotations

import json
import re
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from provisioner.access.handout import build_handout, write_handout
from provisioner.access.ssh_config import host_alias
from provisioner.gcp.quotas import Quota, demand
from provisioner.recipe.settings import parse_settings
from provisioner.stack import VmOutputs
from tests.support.openssh import resolved_by
from tests.support.pulumi_harness import run_program

TUNNEL_MEMBER = "gcp:iap/tunnelInstanceIAMMember:TunnelInstanceIAMMember"
ADDRESS = "gcp:compute/address:Address"


def public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


def test_a_class_of_thirty_under_iap_is_handed_out_without_the_instructor_holding_students_keys(
    tmp_path: Path,
) -> None:
    names = [f"student{n:02d}" for n in range(1, 31)]
    own = {name: public_key() for name in names[::3]}  # every third student brings their own key
    roster = tmp_path / "roster.csv"
    roster.write_text("name,sshPublicKey,email\n" + "".join(f"{n},{own.get(n, '')},{n}@example.edu\n" for n in names))
    keys = tmp_path / "keys"
    config = {
        "gcp:project": "course-project-1",
        "gcp:zone": "europe-west1-b",
        "course-vm:sshKeyPath": str(keys / "course-vm"),
        "course-vm:sshAccess": "iap",
        "course-vm:studentsCsv": str(roster),
    }
    run = run_program(config)

    # No external address; one tunnel grant per student, on their own VM only.
    assert run.of_type(ADDRESS) == []
    students = run.outputs["students"]
    grants = {r.inputs["member"]: r.inputs["instance"] for r in run.of_type(TUNNEL_MEMBER)}
    assert grants == {f"user:{n}@example.edu": students[n]["instanceName"] for n in names}
    # The instructor holds a generated key only for the students who brought none.
    generated = {p.name for p in keys.iterdir() if not p.name.endswith((".pub", ".known_hosts", ".stacks", ".lock"))}
    assert generated == {"course-vm", *(f"course-vm-{n}" for n in names if n not in own)}

    # The quotas that class needs in one region: no addresses under iap.
    settings = parse_settings(
        {"sshAccess": "iap", "studentsCsv": str(roster), "sshKeyPath": str(keys / "course-vm")},
        "course-project-1",
        "europe-west1-b",
    )
    assert demand(settings, 30, 4, {"CPUS": Quota("CPUS", "europe-west1", 24, 0)}) == {
        ("CPUS_ALL_REGIONS", "project"): 120,
        ("CPUS", "europe-west1"): 120,
        ("SSD_TOTAL_GB", "europe-west1"): 900,
    }

    # Every student's folder: their entry through the tunnel, their pins, their key only if generated.
    for name in names:
        vm = VmOutputs.parse(students[name])
        alias = host_alias("dev", name)
        private = None if name in own else Path(vm.identity_file).read_bytes()
        folder = tmp_path / "out" / name
        write_handout(folder, build_handout(name, alias, vm, private), windows=False)
        files = {p.name for p in folder.iterdir()}
        assert (alias in files) == (name not in own)
        assert all(p.name.startswith(alias) or p.name == "README.txt" for p in folder.iterdir())
        texts = " ".join(p.read_text() for p in folder.iterdir() if p.name != alias)
        assert set(re.findall(r"student\d\d", texts)) == {name}, "nothing of another student's"
        options = resolved_by(folder / f"{alias}.config", alias)
        assert options["hostname"] == vm.instance_name
        assert options["proxycommand"].startswith("gcloud compute start-iap-tunnel")
        assert (folder / f"{alias}.known_hosts").read_text().startswith(vm.instance_name + " ")
    assert json.dumps(run.outputs).count("PRIVATE KEY") == 0
