"""Errors that the command line turns into a one-line message instead of a traceback."""


class MtganError(Exception):
    """A problem with the user's input: a config key, a path, a dataset (exit status 2)."""

    exit_status = 2


class ConfigError(MtganError):
    """An unknown or out-of-range configuration value."""


class DataError(MtganError):
    """A dataset that is missing, malformed or too small for the asked task."""


class NumericalError(MtganError):
    """A loss or weight that became NaN or infinite: a runtime failure (exit status 1).

    ``reason`` says what diverged and where; the message adds what to do about it.
    """

    exit_status = 1

    def __init__(self, reason: str, advice: str):
        super().__init__(f"{reason}; {advice}")
        self.reason = reason
