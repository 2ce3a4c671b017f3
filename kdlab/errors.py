"""User-facing errors. The CLI turns any of these into one line on stderr and exit code 2."""


class KDLabError(Exception):
    """Base class for errors caused by the user's input (config, files, model pairing)."""


class ConfigError(KDLabError):
    """A config key or value is invalid."""


class DataError(KDLabError):
    """A dataset is missing, unreadable, empty or malformed."""


class IncompatibleError(KDLabError):
    """A method cannot be applied to this teacher/student pair (raised before training)."""


class CheckpointError(KDLabError):
    """A checkpoint or cache file is missing, corrupt or does not match."""


class NonFiniteLossError(KDLabError):
    """Training produced NaN/inf; carries the step and the loss term."""
