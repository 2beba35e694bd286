"""User-facing errors. The CLI prints them as one line (``error: ...``) and exits with status 2, no traceback."""


class InputError(ValueError):
    """Bad user input: the message names the file, argument or field and says what was expected."""
