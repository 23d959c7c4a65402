"""User-facing errors: each carries one line saying what went wrong, where, and what to do.
The CLI prints that line and exits non-zero; it never shows a traceback for these."""

from __future__ import annotations

from .ir import GraphError, VerificationError


class KilnError(Exception):
    """Base of errors caused by the user's input or options (printed as one line by the CLI)."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class ModelLoadError(KilnError):
    """The model file is missing, unreadable, not ONNX, truncated or unsafe."""


class InvalidGraphError(KilnError):
    """The model parses but its graph is malformed (cycle, undefined value, unknown op)."""


class UnsupportedError(KilnError):
    """A valid model uses something this backend or pass cannot handle."""


class OptionError(KilnError):
    """A command-line or API option is wrong or inconsistent."""


class OutputError(KilnError):
    """An output cannot be written where asked."""


class PassFailure(KilnError):
    """A pass raised or broke the IR; the message names the pass and the ones before it."""

    exit_code = 3


__all__ = [
    "GraphError", "InvalidGraphError", "KilnError", "ModelLoadError", "OptionError", "OutputError",
    "PassFailure", "UnsupportedError", "VerificationError",
]
