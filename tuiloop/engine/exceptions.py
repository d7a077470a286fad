"""The engine's own errors: each message says what went wrong and how to fix it."""

from __future__ import annotations

import errno


class SetupError(ValueError):
    """Model, data, loss and settings do not fit together (found at the start or the first batch)."""


class ResumeError(ValueError):
    """A checkpoint cannot continue this run: another model, another monitor, missing state."""


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite (its message, and the failed run's reason, start with NON_FINITE)."""


NON_FINITE = "the training loss became"


# What an OSError of a file write means for a person; the rest read as the system says them.
_WRITE_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "the folder is gone",
    errno.EIO: "an input/output error",
    errno.ENAMETOOLONG: "the name is too long for the file system",
}


def os_reason(error: OSError) -> str:
    """'no space left on device', 'the file system is read-only', ...: what ``error`` means."""
    reason = _WRITE_ERRORS.get(error.errno or 0)
    if reason:
        return reason
    return (error.strerror or str(error) or type(error).__name__).rstrip(".").lower()


class StorageError(RuntimeError):
    """A file of the run could not be written (a full disk, a read-only or vanished folder).

    ``file`` is the file as the run directory names it (``checkpoints/last.pt``); the loop that
    meets it adds where the run was and which checkpoint is safe (:meth:`sentence`).
    """

    def __init__(self, file: str, cause: OSError) -> None:
        self.file = file
        self.cause = cause
        super().__init__(f"{os_reason(cause)} writing {file}")

    @property
    def reason(self) -> str:
        """What went wrong, without the file: the summary's reason."""
        return os_reason(self.cause)

    def sentence(self, at: str, safe: str) -> str:
        """'no space left on device writing checkpoints/last.pt at epoch 9; the last good checkpoint is ...'."""
        return f"{self} at {at}; {safe}"
