"""The Pulumi CLI, driven: its workspace, a session per command, plans from its events, its state, its errors."""
