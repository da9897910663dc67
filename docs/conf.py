"""Sphinx configuration of the API reference generated from tfnvp's docstrings.

Build (what ``tests/test_docs.py`` runs; warnings, including broken cross-references,
are errors):

    python -m sphinx -b html -W -n --keep-going docs docs/_build
"""

import os
import sys

sys.path.insert(0, os.path.abspath(".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

project = "tfnvp"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon"]
root_doc = "index"
exclude_patterns = ["_build", "api.md"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_inherit_docstrings = False
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False
html_theme = "alabaster"

# Every reference must resolve (-n): a name of ours that does not exist fails the build.
# Names from other packages have no inventory offline (no intersphinx), so they are
# accepted by pattern, and only those.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(tf|tfp|tfd|tfb|keras|np|numpy|tensorflow|tensorflow_probability)(\..*)?"),
    (r"py:.*", r"(collections\.abc|typing|abc|dataclasses|enum|os)\..*"),
    (r"py:class", r"(Tensor|TensorLike|Shape|optional)"),
]
