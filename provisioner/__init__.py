"""course-vm: a ready, verified course VM on Google Cloud with one command."""

__version__ = "0.1.0"
"""The one place the version is kept: pyproject.toml reads it, `course-vm --version` prints it."""
