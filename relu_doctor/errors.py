"""The two tiers of failure: the user's input is wrong (exit 2), or relu-doctor is (exit 3)."""

from __future__ import annotations


class UserError(Exception):
    """Wrong input: a missing or corrupt file, bad flags, data that does not fit the model.

    `message` says what is wrong; `hint` says what to do. The CLI prints both and exits 2.
    """

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n{self.hint}"


class VerificationError(Exception):
    """A patched model did not verify: nothing was written. The CLI exits 3."""

    exit_code = 3


def summarize_exception(e: BaseException, limit: int = 300) -> str:
    """The most telling line of a library's exception, for a one-line user message.

    TorchScript and torch.export wrap the real error after a preamble
    ("The following operation failed ..."), so prefer the last 'SomethingError:' line.
    """
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if not lines:
        return type(e).__name__
    tagged = [line for line in lines
              if line.split(":", 1)[0].endswith(("Error", "Exception")) and line.split(":", 1)[1:] != [""]]
    return (tagged[-1] if tagged else lines[0])[:limit]
