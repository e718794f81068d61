"""The one exception of the engine: parse errors carry a position, evaluation errors may not."""

from __future__ import annotations


class PromQLError(Exception):
    """A parse or evaluation error.

    `message` says what went wrong, `position` is the character offset in the expression text (None for
    errors not tied to one place). `str()` gives `line:column: message` when the position is known, the
    form Prometheus uses, so the caret can be placed by the reader.
    """

    def __init__(self, message: str, position: int | None = None, text: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.position = position
        self.text = text

    def __str__(self) -> str:
        if self.position is None:
            return self.message
        line, col = 1, self.position + 1
        if self.text is not None:
            head = self.text[: self.position]
            line = head.count("\n") + 1
            col = self.position - head.rfind("\n")
        return f"{line}:{col}: {self.message}"
