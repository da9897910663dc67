"""Runs a script (e.g. trainers/train.py) with TFDS fetching from local files, for tests.

    python tests/tfds_local.py --checksums=FILE [--redirect=URL=LOCAL_URL (no "=" in LOCAL_URL) ...] -- SCRIPT ARGS...

TFDS's real download-and-prepare path runs unchanged (download manager, checksum
validation, manual directory, extraction, the dataset's own builder code, the record
writer) with two substitutions a test needs:

* ``--checksums``: the registered checksums (TFDS's ``checksums.tsv`` format: URL, size,
  SHA-256, file name) are read from FILE instead of the installed package, so small
  archives made by the test validate;
* ``--redirect``: a dataset URL is fetched from another URL (a server on 127.0.0.1).

Tests apply the same substitutions in-process with ``patch(..., monkeypatch.setattr)``.
"""

from __future__ import annotations

import runpy
import sys

from etils import epath
from tensorflow_datasets.core import dataset_builder
from tensorflow_datasets.core.download import download_manager


def forget_checksums() -> None:
    """Empties TFDS's per-class memo of the registered checksums (``url_infos``), which
    would otherwise keep a test's substitutes (or miss them) for the rest of the process."""
    dataset_builder.DatasetBuilder.__dict__["url_infos"].fget.__func__.cache_clear()


def patch(checksums: str, redirects: dict[str, str], setattr=setattr) -> None:
    """Applies both substitutions; ``setattr`` may be pytest's ``monkeypatch.setattr``
    (for in-process use, undone after the test, which calls ``forget_checksums`` then)."""
    forget_checksums()
    setattr(dataset_builder.DatasetBuilder, "_checksums_path", epath.Path(checksums))
    fetch = download_manager.DownloadManager._download_or_get_cache

    def redirected(self, resource):
        if isinstance(resource, str):
            resource = redirects.get(resource, resource)
        else:
            # The caller keeps this Resource (it sets its path later): change it in place.
            resource._url = redirects.get(resource.url, resource.url)
        return fetch(self, resource)

    setattr(download_manager.DownloadManager, "_download_or_get_cache", redirected)


def main(argv: list[str]) -> None:
    split = argv.index("--")
    options, command = argv[:split], argv[split + 1:]
    checksums = next(o.split("=", 1)[1] for o in options if o.startswith("--checksums="))
    redirects = dict(o.split("=", 1)[1].rsplit("=", 1) for o in options
                     if o.startswith("--redirect="))
    patch(checksums, redirects)
    sys.argv = command
    runpy.run_path(command[0], run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
