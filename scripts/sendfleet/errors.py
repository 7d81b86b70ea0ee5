"""Errors that the CLI turns into one clear line and an exit code.

Exit codes across the CLI: 0 ok, 1 checked and found problems, 2 bad input or usage
(one line, nothing written), 3 could not check.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_USAGE = 2
EXIT_CANNOT_CHECK = 3


class SendfleetError(Exception):
    """Base of every error the CLI reports as one line."""

    exit_code = EXIT_USAGE


class UsageError(SendfleetError):
    """Bad input or usage: the message names the bad input; nothing was written."""

    exit_code = EXIT_USAGE


class InventoryError(UsageError):
    """An inventory with problems: `problems` lists every one (each naming its file and key); the message is
    the first, with a count of the others, so that every command refuses the inventory in one line."""

    def __init__(self, problems: list[str] | tuple[str, ...]) -> None:
        self.problems = tuple(problems)
        more = len(self.problems) - 1
        plural = "s" if more > 1 else ""
        suffix = f" (and {more} more problem{plural}: sendfleet inventory check lists them)" if more else ""
        super().__init__(f"{self.problems[0]}{suffix}")


class CannotCheckError(SendfleetError):
    """The check could not run meaningfully (resolver never answered, lab not up...)."""

    exit_code = EXIT_CANNOT_CHECK
