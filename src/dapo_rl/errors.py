"""The project's one user-facing error type: its message is a single clear line."""


class DapoError(Exception):
    """One clear user-facing message; the CLI prints it and exits non-zero."""
