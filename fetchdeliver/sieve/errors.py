"""Sieve errors: each names the script file, the line and the column."""

from __future__ import annotations

from fetchdeliver.errors import FetchdeliverError


class SieveSyntaxError(FetchdeliverError):
    """One problem in a script; str() is "FILE:LINE:COL: error: MESSAGE"."""

    def __init__(self, message: str, file: str = "script", line: int = 0, column: int = 0) -> None:
        self.file = file
        self.line = line
        self.column = column
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: error: {self.message}"


class SieveCompileError(SieveSyntaxError):
    """All the problems found in a script (parse or validation); .errors lists them in order."""

    def __init__(self, errors: list[SieveSyntaxError]) -> None:
        self.errors = list(errors)
        self.phase: str | None = None  # "validation" or "generation" when the compiler knows it
        first = self.errors[0]
        super().__init__(first.message, first.file, first.line, first.column)

    def __str__(self) -> str:
        return "\n".join(SieveSyntaxError.__str__(e) for e in self.errors)


class SieveRuntimeError(FetchdeliverError):
    """A failure while running a script (the interpreter falls back to implicit keep)."""

    def __init__(self, message: str, file: str = "script", line: int = 0) -> None:
        self.file = file
        self.line = line
        self.message = message
        super().__init__(f"{file}:{line}: error: {message}")
