"""Errors that the command line turns into a one-line message and a non-zero exit."""


class LDFusionError(Exception):
    """A problem with the user's input (files, config, weights), not a bug."""


class CheckpointError(LDFusionError):
    """A weights file is missing, unreadable, unsafe or does not fit the network."""


class DataError(LDFusionError):
    """Input images or videos are missing, unpaired, mismatched or corrupt."""


class ConfigError(LDFusionError):
    """A YAML config or a command-line override is malformed."""


def first_line(exc: BaseException) -> str:
    """An exception's message cut to its first line, for one-line errors (its type if it has none)."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
