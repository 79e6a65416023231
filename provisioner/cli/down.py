"""`down`: the stack's deletion previewed, confirmed, done; its entries, verifications and students' keys let go."""

from __future__ import annotations

from provisioner.access.keys import release_claims
from provisioner.access.ssh_config import host_alias
from provisioner.cli.console import Confirm, declined
from provisioner.cli.ssh_entries import aliases, remove_entries
from provisioner.driver.session import StackSession
from provisioner.driver.verifications import forget_verifications
from provisioner.driver.workspace import OnOutput
from provisioner.errors import CourseVmError


def down(stack_name: str, *, confirm: Confirm, on_output: OnOutput = print) -> None:
    """Preview what the stack's destruction deletes, ask CONFIRM, destroy it all and remove its `Host` entries.

    Never creates a stack. Raises CourseVmError when there is no stack STACK_NAME or the answer is
    no (nothing deleted), EngineError when Pulumi fails.
    """
    session = StackSession.open(stack_name)
    session.select()
    key_path = session.config().key_path()
    plan = session.preview_destroy()
    # The preview names every VM in the state, also those a failed first `up` left out of the outputs.
    gone = {host_alias(stack_name)} | aliases(stack_name, session.state().names() | set(plan.students()))
    if not confirm(plan):
        raise declined("down")
    if plan.changes:
        session.destroy(on_output)
    remove_entries(gone)
    forget_verifications(stack_name)
    if key_path is None:
        return
    try:
        retired = release_claims(stack_name, key_path)
    except (OSError, CourseVmError) as error:
        on_output(f"the VMs are gone, but their students' keys beside {key_path} were not retired ({error})")
        return
    if retired:
        on_output(
            f"retired {len(retired)} students' generated keys (renamed to KEY.retired-...), so that a "
            "later class gets new ones"
        )
