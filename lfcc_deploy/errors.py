"""One error hierarchy and one exit-code contract for the whole toolkit.

Library code raises these; the CLI's single error boundary turns them into one
line on stderr (plus at most one hint line) and the documented exit code.
Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130


class LfccError(Exception):
    """Base error: a message that names the file and key, and an optional fix."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, file: str | None = None, key: str | None = None,
                 hint: str | None = None):
        self.message, self.file, self.key, self.hint = message, file, key, hint
        super().__init__(self.line())

    def line(self) -> str:
        where = ": ".join(str(p) for p in (self.file, self.key) if p)
        return f"{where}: {self.message}" if where else self.message


class BadInput(LfccError):
    """The user's input (recipe, file, flag, run directory) cannot be used as given."""


class MissingDependency(LfccError):
    """An optional package the requested feature needs is not installed."""


class CheckFailed(LfccError):
    """A measured check (parity, gate) did not pass."""

    exit_code = EXIT_CHECK_FAILED


class Diverged(LfccError):
    """Training produced a non-finite loss; the last good checkpoint is kept."""

    exit_code = EXIT_DIVERGED
