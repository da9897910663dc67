"""``UsageError``: the error of a value its caller chose (an argument, a flag, a file).

tfnvp and its trainers raise ``UsageError`` when they refuse a value that came
from their user -- a constructor argument, a command-line flag, a data file, a
run directory -- with a message naming it and the fix.  It is a ``ValueError``,
so ``except ValueError`` still catches it.  The trainers print a ``UsageError``
in one line without a traceback; any other ``ValueError`` is an error in tfnvp
or in a library it uses, and keeps its traceback (``trainers/console.py``,
``is_user_error``).
"""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """A value chosen by the caller was refused; the message names it and the fix."""
