"""Errors that describe bad user input.

Entry points print an :class:`InputError` as one line and exit non-zero, without a traceback,
because the fix is in the user's hands (a config value, a path, a dataset to prepare).
"""

import numbers


class InputError(ValueError):
    """Bad user input: unknown name, wrong shape or dtype, impossible value, missing data."""


def require(checks) -> None:
    """Raises InputError with the message of the first ``(ok, message)`` pair that fails."""
    for ok, message in checks:
        if not ok:
            raise InputError(message)


#: The one set of bounds every config checks its numbers against: kind → (test, wording).
BOUNDS = {
    "count": (lambda v: v >= 1, ">= 1"),
    "positive": (lambda v: v > 0, "> 0"),
    "non_negative": (lambda v: v >= 0, ">= 0"),
    "fraction": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "momentum": (lambda v: 0 <= v < 1, "in [0, 1)"),
    "points": (lambda v: v >= 2, ">= 2"),
}


def check_bounds(values, prefix: str = "", **kinds) -> None:
    """Raises InputError for the first of ``values`` (a mapping or an object with those
    attributes) outside its kind's bounds in :data:`BOUNDS`.

    >>> check_bounds(config, count=("epochs", "batch_size"), momentum=("momentum",))
    """
    for kind, names in kinds.items():
        test, wording = BOUNDS[kind]
        for name in names:
            value = values[name] if isinstance(values, dict) else getattr(values, name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or not test(value):
                raise InputError(f"{prefix}{name} must be {wording}, got {value!r}")


def check_choice(name: str, value, choices) -> None:
    """Raises InputError unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise InputError(f"unknown {name} {value!r}; choose from {', '.join(choices)}")


class WriteError(OSError):
    """A file could not be written (disk full, no permission, read-only folder).

    Entry points print it as one line naming the path and the cause and exit with status 74
    (``EX_IOERR``); the writers keep what was written before (files are replaced atomically).
    """

    def __init__(self, path, cause: BaseException):
        reason = getattr(cause, "strerror", None) or str(cause) or type(cause).__name__
        super().__init__(getattr(cause, "errno", None), f"cannot write {path}: {reason}")
        self.path, self.cause = str(path), cause

    def __str__(self) -> str:
        return self.strerror
