"""Errors that the command line turns into a one-line message and a non-zero exit."""


class LDFusionError(Exception):
    """A problem with the user's input (files, config, weights), not a bug."""


class CheckpointError(LDFusionError):
    """A weights file is missing, unreadable, unsafe or does not fit the network."""


class DataError(LDFusionError):
    """Input images or videos are missing, unpaired, mismatched or corrupt."""


class ConfigError(LDFusionError):
    """A YAML config or a command-line override is malformed."""
