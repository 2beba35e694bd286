"""User-facing errors. The CLI prints them as one line (``error: ...``) and exits with status 2, no traceback."""

import argparse


class InputError(ValueError):
    """Bad user input: the message names the file, argument or field and says what was expected."""


class NonFiniteError(InputError):
    """A result holds NaN or infinite values (a diverged model, an extreme setting): nothing is written."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse`` whose usage errors are one ``InputError`` line (the dispatcher prints it and exits 2)."""

    def error(self, message: str):  # type: ignore[override]
        raise InputError(f"{message} (see `{self.prog} --help`)")
