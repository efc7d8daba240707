"""Errors that describe bad user input.

Entry points print an :class:`InputError` as one line and exit non-zero, without a traceback,
because the fix is in the user's hands (a config value, a path, a dataset to prepare).
"""


class InputError(ValueError):
    """Bad user input: unknown name, wrong shape or dtype, impossible value, missing data."""


def require(checks) -> None:
    """Raises InputError with the message of the first ``(ok, message)`` pair that fails."""
    for ok, message in checks:
        if not ok:
            raise InputError(message)
