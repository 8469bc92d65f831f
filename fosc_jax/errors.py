"""User errors: bad input the user can fix, reported by the command lines as one line.

Every exception a user can cause by what they type or by the files they point at derives
from :class:`UserError`; ``train.py``, ``evaluate.py`` and ``python -m fosc_jax.reporting``
catch exactly these (plus ``FileNotFoundError`` for missing paths) in :func:`cli_guard` and
print ``error: <message>`` on stderr with exit status 2. Anything else is a bug and keeps
its traceback.

The classes also derive from ``ValueError`` (or ``RuntimeError``) so code that caught the
old, plain exceptions keeps working.
"""
from __future__ import annotations

import contextlib
import functools
import sys
from typing import Callable, Iterator, TypeVar

EXIT_USER_ERROR = 2


class UserError(Exception):
    """Something the user can fix: a config value, a file, a path, a busy workdir."""


class ConfigError(UserError, ValueError):
    """A config field holds a value the run cannot use."""


class UsageError(UserError, ValueError):
    """A command-line flag holds a value the command cannot use."""


class DataError(UserError, ValueError):
    """The configured data set cannot be loaded or does not fit the config."""


class RunFileError(UserError, ValueError):
    """A file of a run directory (config.json, metrics.jsonl, ...) is unreadable."""


class CheckpointError(UserError, RuntimeError):
    """No usable checkpoint: every candidate is missing, corrupt or incomplete."""


class WorkdirLockedError(UserError, RuntimeError):
    """Another live process is training in the same workdir."""


class NonFiniteError(UserError, RuntimeError):
    """Training produced a NaN/Inf loss or parameter; the run stopped before saving it."""


@contextlib.contextmanager
def data_errors(what: str) -> Iterator[None]:
    """Turn the data loaders' errors (they already say what is wrong with which file) into
    DataError, prefixed by ``what`` (the config fields that chose the data)."""
    try:
        yield
    except UserError:
        raise
    except (ValueError, OSError, ImportError, RuntimeError) as err:
        raise DataError(f"{what} cannot be loaded: {err}") from err


USER_ERRORS: tuple[type[BaseException], ...] = (UserError, FileNotFoundError)

F = TypeVar("F", bound=Callable)


def warn(message: str) -> None:
    """``warning: <message>`` on stderr (a problem the run recovers from)."""
    print(f"warning: {message}", file=sys.stderr, flush=True)


def one_line(err: BaseException) -> str:
    """``error: <message>`` with the message folded onto one line."""
    text = " ".join(str(err).split()) or type(err).__name__
    return f"error: {text}"


def cli_guard(fn: F) -> F:
    """Run a command-line ``main``; user errors exit with one ``error: ...`` line (status 2)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as err:
            print(one_line(err), file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None
    return wrapper  # type: ignore[return-value]
