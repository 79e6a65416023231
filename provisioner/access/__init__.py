"""How course-vm reaches a VM: the student's key, pinned host keys, SSH, and ~/.ssh/config entries."""
