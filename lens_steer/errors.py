"""Exceptions raised by lens_steer; each message is one line naming the problem and the fix."""


class LensSteerError(ValueError):
    """Base class: a user-facing error whose message is a single line."""


class DataError(LensSteerError):
    """Malformed or missing data (names the file and line)."""


class ModelError(LensSteerError):
    """Unknown model, hook point or layer."""


class VectorError(LensSteerError):
    """A steering vector that does not fit the model, or is malformed."""


class StudyError(LensSteerError):
    """An Optuna study or search configuration that cannot be used."""


class ResultsError(LensSteerError):
    """A results file (results.json) that is not of the schema this version reads: names the missing or malformed
    part."""


class LockHeldError(LensSteerError):
    """An advisory file lock (lens_steer.files.file_lock) another process holds: `path`, and `holder` (what it wrote
    into the lock file, "" if nothing)."""

    def __init__(self, path: object, holder: str) -> None:
        self.path, self.holder = path, holder
        super().__init__(f"{path} is locked by {holder or 'another process'}; wait for it to finish")
