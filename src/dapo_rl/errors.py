"""The project's one user-facing error type: its message is a single clear line."""


class DapoError(Exception):
    """One clear user-facing message; the CLI prints it and exits non-zero.

    Messages quote text from files and model outputs (field names, values), which may hold
    line breaks or control characters: they are escaped so the message stays one line.
    """

    def __str__(self) -> str:
        text = super().__str__()
        if text.isprintable():
            return text
        return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)
