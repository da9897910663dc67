"""Which tfnvp a command runs: the checkout's, when started as ``python trainers/X.py``.

A script started from a checkout puts the checkout first on ``sys.path`` (the
scripts do so before importing anything of tfnvp), so it runs the checkout's
``tfnvp`` and ``trainers``, on purpose: that is the code being edited.  When
a tfnvp distribution is also installed from elsewhere (a wheel, or an editable
install of another checkout), the installed commands (``tfnvp-train``, ...)
would run different code; ``announce`` says so in one line.  Standard library
only: it runs before TensorFlow is imported.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import sys
from urllib.parse import unquote, urlparse

__all__ = ["installed_location", "announce"]


def installed_location(checkout: str) -> str | None:
    """The directory holding the installed ``tfnvp`` distribution's code (the source
    folder of an editable install), or None if tfnvp is not installed.  Metadata in the
    ``checkout`` itself (a ``tfnvp.egg-info`` left by a build) is not an installation."""
    path = [entry for entry in sys.path
            if os.path.realpath(entry or os.curdir) != os.path.realpath(checkout)]
    dist = next(iter(importlib.metadata.distributions(name="tfnvp", path=path)), None)
    if dist is None:
        return None
    try:
        direct_url = json.loads(dist.read_text("direct_url.json") or "{}")
    except ValueError:
        direct_url = {}
    if direct_url.get("dir_info", {}).get("editable") and direct_url.get("url", "").startswith(
            "file:"):
        return unquote(urlparse(direct_url["url"]).path)
    return os.path.dirname(str(dist.locate_file("tfnvp")))


def announce(checkout: str) -> None:
    """Prints one line when the installed tfnvp is not the ``checkout`` being run."""
    installed = installed_location(checkout)
    if installed is not None and os.path.realpath(installed) != os.path.realpath(checkout):
        print(f"Using the checkout's code at {checkout} (not the installed tfnvp at "
              f"{installed}).", file=sys.stderr, flush=True)
