"""The exceptions users catch. Every error raised by smallpond derives from SmallpondError."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "SmallpondError",
    "ConfigError",
    "InputError",
    "SchemaMismatchError",
    "SqlError",
    "PlanError",
    "TaskError",
    "UserFunctionError",
    "PartitionKeyError",
    "ResourceError",
    "OutOfMemoryError",
    "DiskFullError",
    "OutputError",
    "OutputExistsError",
    "IntegrityError",
]


class SmallpondError(Exception):
    """Root of every smallpond exception."""

    def __reduce__(self):
        # keep subclass attributes when an error crosses a process boundary
        return (_rebuild, (type(self), self.args, self.__dict__))


class ConfigError(SmallpondError):
    """An invalid configuration value or option."""


class InputError(SmallpondError):
    """An input path is missing, unreadable or malformed."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class SchemaMismatchError(InputError):
    """Files read together do not share one schema."""


class SqlError(SmallpondError):
    """A SQL statement failed to parse, bind or run; carries the SQL text."""

    def __init__(self, message: str, sql: str | None = None, statement: int | None = None,
                 line: int | None = None):
        super().__init__(message)
        self.sql = sql
        self.statement = statement
        self.line = line


class PlanError(SmallpondError):
    """Bad arguments to a DataFrame operation (caught before anything runs)."""


class TaskError(SmallpondError):
    """A task failed; names the stage, the partition and the inputs it read."""

    def __init__(self, message: str, stage: str | None = None, partition: int | None = None,
                 inputs: Sequence[str] = (), remote_traceback: str | None = None):
        super().__init__(message)
        self.stage = stage
        self.partition = partition
        self.inputs = list(inputs)
        self.remote_traceback = remote_traceback

    def __str__(self) -> str:
        text = super().__str__()
        if self.remote_traceback:
            text += "\n\nTraceback in the worker:\n" + self.remote_traceback
        return text


class UserFunctionError(TaskError):
    """A user-supplied Python function raised.

    Raised on the driver as an instance of the user's own exception class too (when that
    class could be sent back), so `except ZeroDivisionError:` around an action still works;
    `user_error` is the original exception.
    """

    def __init__(self, message: str, function: str | None = None,
                 user_error: BaseException | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.function = function
        self.user_error = user_error


_DUAL_CLASSES: dict[type, type] = {}


def _reduce_as_plain(error: UserFunctionError):
    return (_rebuild, (UserFunctionError, error.args, error.__dict__))


def as_user_exception(error: UserFunctionError) -> UserFunctionError:
    """The same error, also an instance of the user's exception class (if it can be)."""
    original = getattr(error, "user_error", None)
    if original is None or isinstance(error, type(original)):
        return error
    base = type(original)
    dual = _DUAL_CLASSES.get(base)
    if dual is None:
        try:
            dual = type(f"UserFunctionError[{base.__name__}]", (type(error), base),
                        {"__module__": __name__, "__str__": TaskError.__str__,
                         "__reduce__": _reduce_as_plain})
        except TypeError:  # a layout Python cannot combine: keep the plain error
            return error
        _DUAL_CLASSES[base] = dual
    try:
        combined = dual.__new__(dual, *error.args)
        Exception.__init__(combined, *error.args)
        combined.__dict__.update(error.__dict__)
    except Exception:
        return error
    combined.__cause__ = original
    combined.__traceback__ = error.__traceback__
    return combined


class PartitionKeyError(TaskError):
    """A partition key evaluated outside 0..n-1."""


class ResourceError(SmallpondError):
    """A task ran out of a machine resource."""


class OutOfMemoryError(ResourceError):
    """A task exceeded its memory budget."""


class DiskFullError(ResourceError):
    """A disk filled up; `mount` names the mount point that had no space, `path` the file."""

    def __init__(self, message: str, mount: str | None = None, path: str | None = None):
        super().__init__(message)
        self.mount = mount
        self.path = path


class OutputError(SmallpondError):
    """An output path cannot be written: unwritable, or it overlaps an input or the data_root."""

    def __init__(self, message: str, path: str | None = None):
        super().__init__(message)
        self.path = path


class OutputExistsError(OutputError):
    """The output path already holds files and mode='error'."""


class IntegrityError(SmallpondError):
    """A checksum or manifest did not match what was recorded."""


def _rebuild(cls, args, state):
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error
