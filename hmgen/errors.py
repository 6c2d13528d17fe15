"""One base class for every error a user can cause: the CLI catches `HmgenError` once and prints one line.

Anything else that escapes is a bug in hmgen (the CLI says "internal error" and how to see the traceback)."""


class HmgenError(Exception):
    """A failure the user can act on; `str(e)` is the one line the CLI prints."""

    exit_code = 1


class DataError(HmgenError):
    """Bad data or a bad data spec (a corpus, a download, a vocabulary): reported as one line.
    Here rather than in hmgen.text.data so that the modules that raise it import nothing from each other."""


class UsageError(HmgenError):
    """An option or argument that cannot work (a negative count, an unknown device, ...): exit status 2."""

    exit_code = 2
