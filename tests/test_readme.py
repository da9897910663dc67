"""The README's commands and Python example are true."""

import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_python_example_runs_as_written(tmp_path):
    (example,) = _blocks("python")
    script = tmp_path / "example.py"
    script.write_text(example)
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    bpd_line = result.stdout.strip().splitlines()[-1]
    assert "nan" not in bpd_line.lower()


def test_ci_runs_the_readme_commands():
    install, test = (block.strip() for block in _blocks("bash")[:2])
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()
    setup = install.split(" && .venv/bin/python trainers/train.py")[0]
    assert setup in ci
    assert install in ci.splitlines()  # The whole quickstart: the fresh install and its run.
    flagfile = re.search(r"--flagfile=(\S+)", install).group(1)
    assert (ROOT / flagfile).exists()
    # The design card's command, as the Training section gives it, runs in CI (offline there:
    # up to its clear message; tests/test_tfds_download.py has the online path).
    assert "`python trainers/train.py --flagfile=cifar.flags`" in README
    assert ".venv/bin/python trainers/train.py --flagfile=cifar.flags >" in ci
