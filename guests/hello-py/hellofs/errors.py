"""The one error a hellofs operation raises: an fshost error code and a message.

Codes are the names of the WIT enum `error-code` (wit/fshost.wit); `app.py`
turns them into the generated enum. Anything else escaping a parser (a
struct.error on a short buffer, say) is a bug, and `app.py` reports it as
`corrupted` rather than letting it trap the instance.
"""

NOT_FOUND = "NOT_FOUND"
NOT_DIR = "NOT_DIR"
IS_DIR = "IS_DIR"
CORRUPTED = "CORRUPTED"
IO = "IO"
INVALID = "INVALID"
NO_DATA = "NO_DATA"


class FsError(Exception):
    """An operation failed with `code` (an `error-code` name) because of `message`."""

    def __init__(self, code, message=""):
        super().__init__(message)
        self.code = code
        self.message = message

    def context(self, what):
        """The same error, its message prefixed with `what` (the object it concerns)."""
        return FsError(self.code, f"{what}: {self.message}" if self.message else what)

    def __str__(self):
        return f"{self.code.lower().replace('_', '-')}: {self.message}" if self.message else self.code.lower()


def corrupted(message):
    return FsError(CORRUPTED, message)
