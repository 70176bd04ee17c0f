"""The one error type a user can cause and fix.

The command line prints a ``UserError`` (and an ``OSError`` of the machine: a full disk, a missing folder) as one
line that names the value, what was expected and the fix. Every other exception is a bug — in ssl-bench or in a
user's plug-in — and keeps its traceback, so a plug-in's mistake points at the plug-in's file and line.
``UserError`` is a ``ValueError`` so that library callers catching bad values keep working.
"""


class UserError(ValueError):
    """A bad value, file or setting that the user can fix; the message says how."""


class MissingPackageError(UserError, ImportError):
    """An optional package a feature needs is not installed; the message names the pip command."""
