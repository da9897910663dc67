"""Which tfnvp a script runs when started as ``python trainers/X.py``: its own checkout's, or none.

The scripts import ``tfnvp`` and ``trainers`` as installed packages, without
editing ``sys.path``: from a checkout installed editable (``pip install -e .``,
README) they are the checkout's own code.  Started from a checkout that is not
the installed one (another checkout, a wheel) or with nothing installed, a
script would run another version's modules, or fail on its first import;
``require_own_checkout`` stops it first with one line saying how to run the
checkout's code.  Imported by the scripts as their sibling ``checkout`` (Python
puts a script's folder first on ``sys.path``) before they import anything of
tfnvp; standard library only.
"""

from __future__ import annotations

import importlib.util
import os
import sys

__all__ = ["imported_from", "require_own_checkout"]


def imported_from(package: str) -> str | None:
    """The folder holding the ``package`` that ``import package`` would load (without
    importing it), or None if there is none."""
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    return os.path.dirname(os.path.dirname(os.path.realpath(spec.origin)))


def require_own_checkout(script: str) -> None:
    """Exits with a one-line message unless ``tfnvp`` and ``trainers`` are imported from the
    checkout holding ``script`` (a ``trainers/*.py`` file)."""
    checkout = os.path.dirname(os.path.dirname(os.path.realpath(script)))
    module = f"trainers.{os.path.splitext(os.path.basename(script))[0]}"
    for package in ("trainers", "tfnvp"):
        found = imported_from(package)
        if found == checkout:
            continue
        where = ("is not installed in this Python environment" if found is None
                 else f"is imported from {found}, not from this checkout")
        sys.exit(f"Error: {package} {where} ({checkout}). Install the checkout (pip install -e "
                 f"{checkout}), or run its code without installing it: cd {checkout} && "
                 f"python -m {module} ...")
