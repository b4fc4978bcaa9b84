"""One family of errors whose messages tell the user what to do.

The command line turns each into a single line on stderr and the exit code
given by :attr:`PhotostyleError.exit_code`.
"""

from __future__ import annotations


class PhotostyleError(Exception):
    """Base class of every error photostyle raises on purpose."""

    exit_code: int = 1


class InputError(PhotostyleError):
    """A file given by the user cannot be used (missing, corrupt, wrong kind, too big)."""

    exit_code = 2


class MaskError(InputError):
    """A segmentation mask cannot be used with its photo."""


class WeightsError(PhotostyleError):
    """Model weights are missing, corrupt or cannot be fetched."""

    exit_code = 3


class DeviceError(PhotostyleError):
    """The requested device is not available or ran out of memory."""

    exit_code = 4


class OptimisationError(PhotostyleError):
    """The optimisation diverged (NaN or infinite loss)."""

    exit_code = 5


class OutputError(PhotostyleError):
    """The result cannot be written where the user asked."""

    exit_code = 6


class Interrupted(PhotostyleError):
    """The user interrupted the run (Ctrl-C); the best result so far was kept."""

    exit_code = 130
