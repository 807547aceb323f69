"""User-facing errors.

Library code raises these for bad input (a missing file, an unknown name, an impossible value);
the CLI prints the message on one line and exits with status 2. Anything else is a bug.
"""


class ExdistillError(Exception):
    """A problem with the user's input or environment, described in one line."""


class ConfigError(ExdistillError):
    """An unknown key or an impossible value in the configuration."""


class DataError(ExdistillError):
    """A dataset that is missing, malformed or too small for the request."""


class NumericalError(ExdistillError):
    """NaN or Inf appeared in a loss or in the synthetic images."""
