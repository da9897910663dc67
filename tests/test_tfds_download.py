"""The paper flagfiles' command on a fresh machine: TFDS's real download-and-prepare path
(not ``tfds.testing.mock_data``), the default run directory, and the offline message.

Datasets come as small archives in their real distribution formats, served from
127.0.0.1 or put in TFDS's manual directory. The trainer runs in-process (``train.run``, the
command's code below absl's ``app.run``) with HTTP(S)_PROXY set to a closed port on
127.0.0.1 and only loopback exempted, so nothing here can reach another host, whatever the
network.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import socket
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tfds_local
from trainers import data, prepare_data, tfds_prepare, train

CIFAR_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
IMAGENET_URL = "http://image-net.org/small/{}_32x32.tar"
TINY = ["--num_res_blocks=0", "--hidden_channels=8", "--batch_size=4", "--eval_batch_size=8",
        "--num_sample_images=4", "--log_every=1", "--summary_every=1", "--eval_every=2",
        "--checkpoint_every=2", "--recalibration_batches=1",
        # One replica (tests/conftest.py's two logical CPUs would make it two, at about 1.7
        # times the CPU time): what the data path does does not depend on the replica count.
        "--strategy=one_device"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def offline(monkeypatch) -> None:
    """Any connection except to 127.0.0.1 goes to a closed loopback port and fails."""
    for name in list(os.environ):
        if name.lower() in ("no_proxy", "http_proxy", "https_proxy", "all_proxy"):
            monkeypatch.delenv(name)
    proxy = f"http://127.0.0.1:{_closed_port()}"
    for name, value in (("HTTP_PROXY", proxy), ("HTTPS_PROXY", proxy), ("NO_PROXY", "127.0.0.1")):
        monkeypatch.setenv(name, value)


def _checksums(path: Path, files: dict[str, Path]) -> Path:
    """TFDS's checksums.tsv: URL, size, SHA-256, file name."""
    rows = [f"{url}\t{f.stat().st_size}\t{hashlib.sha256(f.read_bytes()).hexdigest()}\t{f.name}"
            for url, f in files.items()]
    path.write_text("\n".join(rows) + "\n")
    return path


def _cifar_archive(folder: Path, rng: np.random.Generator) -> tuple[Path, np.ndarray]:
    """cifar-10-binary.tar.gz as distributed: per record 1 label byte + 3072 bytes (R, G, B
    planes of 32x32); 5 training batches and a test batch. Returns it and the test images."""
    members, test_images = {}, None
    for name, count in [*((f"data_batch_{i}.bin", 4) for i in range(1, 6)), ("test_batch.bin", 8)]:
        images = rng.integers(0, 256, (count, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, (count, 1), dtype=np.uint8)
        planes = images.transpose(0, 3, 1, 2).reshape(count, 3072)
        members[name] = np.concatenate([labels, planes], axis=1).tobytes()
        test_images = images if name == "test_batch.bin" else test_images
    members["batches.meta.txt"] = "\n".join(["airplane", "automobile", "bird", "cat", "deer",
                                             "dog", "frog", "horse", "ship", "truck"]).encode()
    path = folder / "cifar-10-binary.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        for name, payload in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))
    return path, test_images


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1; yields (folder, base URL)."""
    folder = tmp_path / "www"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _eval_pixels(dataset: str, data_dir: Path, count: int) -> np.ndarray:
    """The held-out images as the trainer reads them (uint8)."""
    config = data.DataConfig(dataset, data_dir=str(data_dir), eval_batch_size=count)
    return next(iter(data.make_eval_dataset(config)))["x"].numpy()


@pytest.fixture
def local_tfds(tmp_path, monkeypatch, capfd, absl_log, offline):
    """Runs trainers/train.py --flagfile=FLAGFILE (in-process, cwd tmp_path) with TFDS data in
    tmp_path/tfds, run tmp_path/run, `files` registered as the checksums of their URLs and
    `redirects` fetched from 127.0.0.1 (tests/tfds_local.py). It returns (exit status, stdout,
    stderr and the absl log)."""
    monkeypatch.chdir(tmp_path)

    def command(files: dict[str, Path], flagfile: str, *args: str,
                redirects: dict[str, str] | None = None) -> tuple[int, str, str]:
        checksums = tmp_path / "checksums.tsv"
        if not checksums.exists():
            _checksums(checksums, files)
        tfds_local.patch(str(checksums), redirects or {}, monkeypatch.setattr)
        capfd.readouterr()
        code = train.run(["train.py", f"--flagfile={flagfile}", f"--data_dir={tmp_path / 'tfds'}",
                          f"--output_dir={tmp_path / 'run'}", *TINY, *args, "--verbosity=0"])
        captured = capfd.readouterr()
        return code, captured.out, captured.err + absl_log()

    yield command
    tfds_local.forget_checksums()  # The substitutes go with the test.


def _manual_dir(tmp_path: Path) -> Path:
    manual = tmp_path / "tfds" / "downloads" / "manual"
    manual.mkdir(parents=True)
    return manual


def _split_sizes(prepared: Path) -> dict[str, int]:
    info = json.loads((prepared / "dataset_info.json").read_text())
    return {split["name"]: sum(map(int, split["shardLengths"])) for split in info["splits"]}


def _image_set(images: np.ndarray) -> list[bytes]:
    assert images.dtype == np.uint8
    return sorted(image.tobytes() for image in images)


def test_cifar10_downloads_prepares_trains_and_resumes(tmp_path, served, local_tfds):
    """cifar.flags: TFDS downloads the archive over HTTP, checks its checksum, builds the
    dataset with its own cifar10 builder, and the trainer trains on it; the same command
    then resumes the run without the archive."""
    folder, base = served
    archive, test_images = _cifar_archive(folder, np.random.default_rng(0))
    local_url = f"{base}/{archive.name}"
    tfds_dir, run = tmp_path / "tfds", tmp_path / "run"
    command = functools.partial(local_tfds, {local_url: archive}, "cifar.flags",
                                "--num_scales=1", "--train_steps=2",
                                redirects={CIFAR_URL: local_url})

    code, out, err = command()
    assert code == 0, err[-3000:]
    assert f"Run directory: {run} (new run)" in out
    assert _split_sizes(tfds_dir / "cifar10" / "3.0.2") == {"train": 20, "test": 8}
    assert (run / "checkpoints" / "ckpt-2.index").exists()
    assert "Evaluation at step 2" in err
    # The builder decoded the binary format: the trainer's held-out images are the archive's
    # (in TFDS's order, a hash of the example keys).
    assert _image_set(_eval_pixels("cifar10", tfds_dir, 8)) == _image_set(test_images)

    downloaded = [p for p in (tfds_dir / "downloads").rglob("*") if p.is_file()]
    assert archive.read_bytes() in [p.read_bytes() for p in downloaded]  # Fetched over HTTP.

    archive.unlink()  # Prepared: the rerun needs no download.
    assert prepare_data.run(["--dataset=cifar10", f"--data_dir={tfds_dir}"]) == 0
    code, out, err = command()  # The same command: done already, without downloading.
    assert code == 0, err[-3000:]
    assert (f"Run directory: {run} (this run is complete (step 2 of 2); raise --train_steps to "
            "continue)") in out


def _png_tar(path: Path, images: np.ndarray) -> Path:
    """A tar of PNG files, like Downsampled ImageNet's train_32x32.tar / valid_32x32.tar."""
    with tarfile.open(path, "w") as archive:
        for i, image in enumerate(images):
            payload = io.BytesIO()
            Image.fromarray(image).save(payload, format="PNG")
            info = tarfile.TarInfo(f"{path.stem}/{i:07d}.png")
            info.size = payload.tell()
            payload.seek(0)
            archive.addfile(info, payload)
    return path


def test_imagenet32_builds_from_files_in_the_manual_directory(tmp_path, local_tfds):
    """imagenet32.flags: TFDS cannot download Downsampled ImageNet any more; its files put in
    DATA_DIR/downloads/manual/ (the README's manual step) are validated and built, offline."""
    manual = _manual_dir(tmp_path)
    rng = np.random.default_rng(1)
    valid_images = rng.integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    files = {IMAGENET_URL.format("train"): _png_tar(
                 manual / "train_32x32.tar", rng.integers(0, 256, (8, 32, 32, 3), np.uint8)),
             IMAGENET_URL.format("valid"): _png_tar(manual / "valid_32x32.tar", valid_images)}
    code, _, err = local_tfds(files, "imagenet32.flags", "--train_steps=2", "--num_scales=1")
    assert code == 0, err[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "ckpt-2.index").exists()
    held_out = _eval_pixels("imagenet32", tmp_path / "tfds", 6)
    assert _image_set(held_out) == _image_set(valid_images)


def _celeba_files(manual: Path, rng: np.random.Generator, partitions: list[int]) -> dict:
    """CelebA's five files as TFDS downloads them (aligned 178x218 JPEGs in a zip, the
    partition list, attributes, landmarks, identities), keyed by their Google Drive URLs."""
    from tensorflow_datasets.datasets.celeb_a import celeb_a_dataset_builder as celeb_a

    names = [f"{i + 1:06d}.jpg" for i in range(len(partitions))]
    with zipfile.ZipFile(manual / "img_align_celeba.zip", "w") as archive:
        for name in names:
            payload = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (218, 178, 3), np.uint8)).save(payload, "JPEG")
            archive.writestr(f"img_align_celeba/{name}", payload.getvalue())

    def table(headings: list[str], values) -> str:
        rows = [f"{n} " + " ".join(str(v) for v in values(i)) for i, n in enumerate(names)]
        return "\n".join([str(len(names)), " ".join(headings), *rows]) + "\n"

    texts = {
        celeb_a.EVAL_LIST: ("list_eval_partition.txt",
                            "".join(f"{n} {p}\n" for n, p in zip(names, partitions))),
        celeb_a.ATTR_DATA: ("list_attr_celeba.txt", table(
            celeb_a.ATTR_HEADINGS, lambda i: rng.choice([-1, 1], len(celeb_a.ATTR_HEADINGS)))),
        celeb_a.LANDMARKS_DATA: ("list_landmarks_align_celeba.txt", table(
            celeb_a.LANDMARK_HEADINGS, lambda i: rng.integers(60, 160, 10))),
        celeb_a.IDENTITY_DATA: ("identity_CelebA.txt", "".join(f"{n} {i + 1}\n"
                                                               for i, n in enumerate(names))),
    }
    files = {celeb_a.IMG_ALIGNED_DATA: manual / "img_align_celeba.zip"}
    for url, (name, text) in texts.items():
        (manual / name).write_text(text)
        files[url] = manual / name
    return files


def test_celeba_builds_from_files_in_the_manual_directory(tmp_path, local_tfds):
    """celeba.flags with CelebA's five files in DATA_DIR/downloads/manual/ (the README's manual
    step when Google Drive refuses): TFDS's celeb_a builder prepares it and the trainer trains."""
    files = _celeba_files(_manual_dir(tmp_path), np.random.default_rng(2),
                          [0, 0, 0, 0, 1, 2, 2, 2])
    code, _, err = local_tfds(files, "celeba.flags", "--train_steps=1", "--num_scales=2")
    assert code == 0, err[-3000:]
    assert (tmp_path / "run" / "checkpoints" / "ckpt-1.index").exists()
    prepared = tmp_path / "tfds" / "celeb_a" / "2.1.0"
    assert _split_sizes(prepared) == {"train": 4, "validation": 1, "test": 3}
    assert _eval_pixels("celeba", tmp_path / "tfds", 3).shape == (3, 64, 64, 3)


def test_offline_start_is_one_clear_message_and_leaves_nothing(tmp_path, offline, monkeypatch,
                                                                capfd):
    """The design card's command with no network: a non-zero exit, the dataset, the data
    directory and what to do, no traceback, and no run directory."""
    data_dir = tmp_path / "tfds"
    monkeypatch.chdir(tmp_path)
    capfd.readouterr()
    assert train.run(["train.py", "--flagfile=cifar.flags", f"--data_dir={data_dir}"]) == 1
    result = capfd.readouterr()
    assert "Run directory: runs/cifar (new run)" in result.out
    error = [line for line in result.err.splitlines() if line.startswith("Error")]
    assert len(error) == 1, result.err[-3000:]
    assert "Dataset cifar10 (TFDS cifar10/3.0.2) is not prepared in " + str(data_dir) in error[0]
    assert "cannot reach www.cs.toronto.edu" in error[0]
    assert "Traceback" not in result.err
    advice = result.err.splitlines()[result.err.splitlines().index(error[0]) + 1]
    for what in ("internet access", "trainers/prepare_data.py --dataset=cifar10 --data_dir=DIR",
                 "image_folder",
                 str(data_dir / "downloads" / "manual")):
        assert what in advice
    assert not (tmp_path / "runs").exists()


def test_dataset_needing_a_missing_module_says_so(tmp_path, capsys):
    """LSUN's TFDS builder reads LMDB through tensorflow-io: without it, a clear error before
    any download."""
    if tfds_prepare.importlib.util.find_spec("tensorflow_io") is not None:
        pytest.skip("tensorflow-io is installed")
    with pytest.raises(tfds_prepare.DatasetUnavailableError,
                       match=r"(?s)lsun_bedroom \(TFDS lsun/bedroom/.*tensorflow_io.*"
                             r"pip install tensorflow-io"):
        data.prepare(data.DataConfig("lsun_bedroom", data_dir=str(tmp_path)))
    assert not (tmp_path / "downloads").exists()
    assert prepare_data.run(["--dataset=lsun_tower", f"--data_dir={tmp_path}"]) == 1
    assert "Error (DatasetUnavailableError): Dataset lsun_tower" in capsys.readouterr().err


def test_default_run_directory_is_named_after_the_flagfile_and_resumes(tmp_path, monkeypatch,
                                                                         capfd):
    monkeypatch.chdir(tmp_path)
    tiny = ["--flagfile=digits.flags", "--num_scales=1", "--num_res_blocks=0",
            "--hidden_channels=8", "--batch_size=16", "--eval_batch_size=300",
            "--num_sample_images=0", "--eval_every=1000", "--checkpoint_every=2"]
    command = ["train.py", *tiny, "--train_steps=2"]
    assert train.run(command) == 0
    assert "Run directory: runs/digits (new run)" in capfd.readouterr().out
    assert (tmp_path / "runs" / "digits" / "checkpoints" / "ckpt-2.index").exists()
    assert train.run(command) == 0  # The same command again: already done, and says so.
    assert ("Run directory: runs/digits (this run is complete (step 2 of 2); raise "
            "--train_steps to continue)\n") == capfd.readouterr().out
    assert train.run([*command[:-1], "--train_steps=3"]) == 0  # Raised: it resumes.
    assert "Run directory: runs/digits (resuming at step 2)" in capfd.readouterr().out
    # Without a flagfile the dataset names it; with neither, a clear error.
    assert train.run(["train.py", "--dataset=nonexistent", "--train_steps=1"]) == 1
    assert not (tmp_path / "runs" / "nonexistent").exists()
    assert train.run(["train.py", "--mode=eval"]) == 1
    assert "--output_dir is needed" in capfd.readouterr().err


def test_a_run_failing_before_its_first_checkpoint_leaves_no_run_directory(tmp_path, capfd):
    """A new run whose data turns out bad after config.json was written: the directory goes."""
    for split, names in (("train", ["000.png", "001.png"]), ("test", ["000.png"])):
        (tmp_path / "images" / split).mkdir(parents=True)
        for name in names:
            Image.fromarray(np.full((8, 8), 7, np.uint8)).save(tmp_path / "images" / split / name)
    good = (tmp_path / "images" / "train" / "000.png").read_bytes()  # Header intact, pixels cut:
    (tmp_path / "images" / "train" / "002.png").write_bytes(good[:len(good) // 2])  # fails late.
    run = tmp_path / "run"
    assert train.run(["train.py", "--dataset=image_folder", f"--data_dir={tmp_path / 'images'}",
                      f"--output_dir={run}", "--train_steps=2", "--num_scales=1",
                      "--num_res_blocks=0", "--hidden_channels=8", "--batch_size=4",
                      "--eval_batch_size=4", "--num_sample_images=0"]) == 1
    assert "cannot read or decode image file" in capfd.readouterr().err
    assert not run.exists()
