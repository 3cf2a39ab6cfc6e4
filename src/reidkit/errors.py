"""Errors that reidkit reports to the user as one clear line (the CLI prints them without a traceback)."""


class ReidkitError(Exception):
    """Base class: a problem in the user's input, with the fix in the message."""


class DatasetError(ReidkitError):
    """A data set root, layout, file name or image that cannot be used."""


class ConfigError(ReidkitError):
    """A config file or override that is unknown, mistyped or inconsistent."""
