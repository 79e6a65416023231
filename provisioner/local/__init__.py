"""The local VM: the same recipe and checker in QEMU on the user's machine."""
