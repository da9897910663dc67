"""Getting a TensorFlow Datasets dataset ready to train on, or saying clearly why it is not.

TFDS downloads a dataset's files into ``DATA_DIR/downloads`` and prepares (converts) them
into ``DATA_DIR/<name>/<version>`` the first time it is used.  Offline, its downloader
retries every URL for about three and a half minutes and then ends in a traceback.
`prepare` checks first, in this order, and raises `DatasetUnavailableError` (one line
naming the dataset and the data directory, one saying what to do) when it cannot work:

1. the dataset is already prepared in the data directory: nothing to do (no network);
2. the builder's Python requirements are installed (LSUN needs ``tensorflow_io``);
3. unless the files are already there (``DATA_DIR/downloads/manual/`` or an earlier
   download), the hosts TFDS downloads from (its registered checksums list the URLs)
   answer within `PROBE_TIMEOUT_S` -- one attempt each, through the same proxy settings
   (``HTTP_PROXY``, ``HTTPS_PROXY``) as TFDS's downloader;
4. ``download_and_prepare`` itself; any failure (HTTP error, checksum mismatch, a
   refused Google Drive download, a broken archive) is reported the same way.

Which datasets TFDS downloads by itself and which need files put in
``DATA_DIR/downloads/manual/`` by hand is in README.md ("Datasets").
"""

from __future__ import annotations

import importlib.util
import pathlib
import urllib.parse

import requests
import tensorflow_datasets as tfds
from absl import logging

PROBE_TIMEOUT_S = 10.0

# Builders whose download by TFDS fails or often fails (by TFDS builder name): the files to put
# in DATA_DIR/downloads/manual/ (the names in TFDS's registered checksums) and why.
_MANUAL_FILES = {
    "downsampled_imagenet/32x32": (
        ("train_32x32.tar", "valid_32x32.tar"),
        "image-net.org/small, TFDS's source, no longer serves them publicly"),
    "downsampled_imagenet/64x64": (
        ("train_64x64.tar", "valid_64x64.tar"),
        "image-net.org/small, TFDS's source, no longer serves them publicly"),
    "celeb_a": (
        ("img_align_celeba.zip", "list_eval_partition.txt", "list_attr_celeba.txt",
         "list_landmarks_align_celeba.txt", "identity_CelebA.txt"),
        "TFDS downloads them from Google Drive, which often refuses automated downloads"),
}
# Python modules a builder imports while preparing (by TFDS builder name, before the '/').
_REQUIRED_MODULES = {"lsun": ("tensorflow_io", "tensorflow-io")}


class DatasetUnavailableError(FileNotFoundError):
    """A TFDS dataset is not prepared in its data directory and cannot be prepared now."""


def data_root(builder: tfds.core.DatasetBuilder) -> pathlib.Path:
    """The data directory: ``builder.data_dir`` is ``ROOT/name[/config]/version``."""
    root = pathlib.Path(builder.data_dir)
    for _ in builder.info.full_name.split("/"):
        root = root.parent
    return root


def _builder_key(builder: tfds.core.DatasetBuilder) -> str:
    """``name`` or ``name/config``, e.g. ``downsampled_imagenet/32x32``."""
    return builder.info.full_name.rsplit("/", 1)[0]


def _missing_module(builder: tfds.core.DatasetBuilder) -> tuple[str, str] | None:
    """(module, pip package) the builder needs to prepare the dataset and cannot import."""
    required = _REQUIRED_MODULES.get(_builder_key(builder).split("/")[0])
    return required if required and importlib.util.find_spec(required[0]) is None else None


def _what_to_do(dataset: str, builder: tfds.core.DatasetBuilder) -> str:
    root, key = data_root(builder), _builder_key(builder)
    manual = root / "downloads" / "manual"
    prepared_copy = ("or pass --data_dir=DIR with a copy prepared elsewhere (`python "
                     f"trainers/prepare_data.py --dataset={dataset} --data_dir=DIR`)")
    own_files = "or train on your own images with --dataset=image_folder or --dataset=npz."
    if key in _MANUAL_FILES:
        files, why = _MANUAL_FILES[key]
        return (f"Put {', '.join(files)} in {manual}/ and run again ({why}), {prepared_copy}, "
                f"{own_files}")
    missing = _missing_module(builder)
    if missing:
        return (f"TFDS's {key.split('/')[0]} builder needs {missing[1]} (`pip install "
                f"{missing[1]}`), which is not installed; install it, {prepared_copy}, {own_files}")
    files = sorted({info.filename for info in (builder.url_infos or {}).values() if info.filename})
    downloaded = f"{', '.join(files)}" if 0 < len(files) <= 5 else "the files TFDS downloads"
    return (f"Run the command once with internet access, or put {downloaded} in {manual}/, "
            f"{prepared_copy}, {own_files}")


def _error(dataset: str, builder: tfds.core.DatasetBuilder, reason: str) -> DatasetUnavailableError:
    return DatasetUnavailableError(
        f"Dataset {dataset} (TFDS {builder.info.full_name}) is not prepared in "
        f"{data_root(builder)} and cannot be prepared now: {reason}.\n"
        + _what_to_do(dataset, builder))


def _short_reason(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    text = lines[0] if lines else type(error).__name__
    return f"{type(error).__name__}: {text[:300]}"


def _has_local_files(builder: tfds.core.DatasetBuilder) -> bool:
    """Whether files for the builder already are in the manual or the download directory."""
    downloads = data_root(builder) / "downloads"
    expected = {info.filename for info in (builder.url_infos or {}).values() if info.filename}
    manual = downloads / "manual"
    if manual.is_dir() and any((manual / name).exists() for name in expected):
        return True
    cached = downloads / builder.name
    return cached.is_dir() and any(p.is_file() and ".tmp." not in str(p) for p in cached.rglob("*"))


def _unreachable_host(builder: tfds.core.DatasetBuilder) -> str | None:
    """Why the first host of the registered URLs that does not answer is unreachable, or None."""
    hosts = sorted({urllib.parse.urlsplit(url)[:2] for url in (builder.url_infos or {})})
    for scheme, host in hosts:
        try:
            requests.head(f"{scheme}://{host}/", timeout=PROBE_TIMEOUT_S, allow_redirects=False)
        except requests.RequestException:
            logging.debug("Probing %s failed.", host, exc_info=True)
            return f"cannot reach {host} (no network?)"
    return None


def _blocker(builder: tfds.core.DatasetBuilder) -> str | None:
    """Why downloading and preparing cannot work now (steps 2 and 3), or None."""
    missing = _missing_module(builder)
    if missing:
        return f"its builder needs the Python module {missing[0]}"
    if _has_local_files(builder):
        return None
    return _unreachable_host(builder)


def download_and_prepare(dataset: str, builder: tfds.core.DatasetBuilder) -> None:
    """``builder.download_and_prepare()`` with failures reported as `DatasetUnavailableError`."""
    try:
        builder.download_and_prepare()
    except Exception as error:  # Whatever TFDS, requests or an archive raise: one clear message.
        raise _error(dataset, builder, _short_reason(error)) from error


def prepare(dataset: str, builder: tfds.core.DatasetBuilder) -> None:
    """Makes sure the dataset is prepared in the builder's data directory (see module doc).

    Args:
      dataset: the trainer's name of the dataset (for messages).
      builder: the TFDS builder, with its data_dir.

    Raises:
      DatasetUnavailableError: the dataset is not prepared and cannot be prepared now.
    """
    if builder.is_prepared():
        return
    logging.info("Downloading and preparing TFDS %s in %s.", builder.info.full_name,
                 data_root(builder))
    reason = _blocker(builder)
    if reason is not None:
        raise _error(dataset, builder, reason)
    download_and_prepare(dataset, builder)
