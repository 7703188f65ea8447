"""The exceptions users catch. Every error raised by smallpond derives from SmallpondError."""

from __future__ import annotations

import sys
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
    `user_error` carries the original's (class, args, attributes).
    """

    def __init__(self, message: str, function: str | None = None,
                 user_error: tuple | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.function = function
        self.user_error = user_error


_DUAL_CLASSES: dict[type, type] = {}


def _reduce_as_plain(error: UserFunctionError):
    return (_rebuild, (UserFunctionError, error.args, error.__dict__))


def portable_error(error: BaseException) -> tuple | None:
    """What crosses to the driver of a user's exception: its class, args and attributes (not
    the instance: a class whose __init__ takes other arguments cannot be rebuilt by pickle).
    None when the class itself cannot be pickled."""
    import cloudpickle

    state = {}
    for key, value in vars(error).items():
        try:
            cloudpickle.dumps(value)
        except Exception:
            continue
        state[key] = value
    args = []
    for value in error.args:
        try:
            cloudpickle.dumps(value)
        except Exception:
            value = repr(value)
        args.append(value)
    try:
        cloudpickle.dumps(type(error))
    except Exception:
        return None
    return type(error), tuple(args), state


def _instance(cls: type, args: tuple, state: dict) -> BaseException:
    error = cls.__new__(cls, *args)
    BaseException.__init__(error, *args)
    error.__dict__.update(state)
    return error


def _driver_class(cls: type) -> type:
    """A class of the driver's script comes back from another process (Ray's pickling) as a
    copy: `except MyError:` in the script needs the script's own class object."""
    if cls.__module__ != "__main__":
        return cls
    own = getattr(sys.modules.get("__main__"), cls.__qualname__, None)
    if isinstance(own, type) and issubclass(own, BaseException) and own is not cls \
            and own.__name__ == cls.__name__:
        return own
    return cls


def as_user_exception(error: UserFunctionError) -> UserFunctionError:
    """The same error, also an instance of the user's exception class (if it can be)."""
    carried = getattr(error, "user_error", None)
    if not isinstance(carried, tuple) or len(carried) != 3:
        return error
    base, args, state = carried
    if not isinstance(base, type) or not issubclass(base, BaseException) \
            or isinstance(error, base):
        return error
    base = _driver_class(base)
    dual = _DUAL_CLASSES.get(base)
    if dual is None:
        try:
            dual = type(f"UserFunctionError[{base.__name__}]", (type(error), base),
                        {"__module__": __name__, "__str__": TaskError.__str__,
                         "__reduce__": _reduce_as_plain, "__init__": TaskError.__init__})
        except TypeError:  # a layout Python cannot combine: keep the plain error
            return error
        _DUAL_CLASSES[base] = dual
    try:
        combined = _instance(dual, error.args, {**state, **error.__dict__})
        combined.__cause__ = _instance(base, args, state)
    except Exception:
        return error
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
