"""The project's error types for mistakes in what the user gave grouprl.

Every one of them is a ``UserError``: the command line reports it as one line (what, where, how to fix) and
exits with status 2. Anything else that escapes, a ``ValueError`` from deep inside a library included, is a
bug and is shown as a traceback (exit status 1). So code that detects a user mistake raises one of these,
never a bare ``ValueError`` or ``OSError``. Each also derives from ``ValueError`` (``RuntimeError`` for a
diverged run), so library callers that catch those keep working.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input, reported as one line and exit status 2."""


class ConfigError(UserError, ValueError):
    """A configuration value or key: the message names the key and the fix."""


class DataError(UserError, ValueError):
    """A dataset that cannot be used: the message names the file, line or column and the fix."""


class RewardError(UserError, ValueError):
    """A reward specification that cannot be resolved."""


class RewardFailed(RewardError):
    """A reward function gave no usable value on any sample of a training step (``reward_fail_fast``)."""


class EnvError(UserError, ValueError):
    """An environment (``environment=...``) that cannot start an episode: its class, its chat template or its
    ``reset``."""


class ModelError(UserError, ValueError):
    """A model or tokenizer source that cannot be loaded: the message says what is missing and what was
    found."""


class ResumeError(UserError, ValueError):
    """--resume, or the run directory, cannot be used as asked."""


class RunDirError(UserError, ValueError):
    """output.run_dir cannot be written: it is a file, or another live process is writing it."""


class TrainingDiverged(UserError, RuntimeError):
    """Too many consecutive non-finite updates."""


def read_utf8(path, error: type[UserError]) -> str:
    """The text of ``path``; a byte that is not UTF-8 is ``error`` naming the file, line and column."""
    with open(path, "rb") as handle:
        data = handle.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise error(f"{path} line {line} column {column}: byte 0x{data[err.start]:02x} is not UTF-8; "
                    "save the file as UTF-8") from None
