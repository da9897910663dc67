"""The README's commands and Python example are true."""

import os
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.S)


def test_python_examples_run_as_written(tmp_path):
    """The library example and the Keras one (fit, a .keras file that resumes training,
    predict), each as its own script; each prints finite figures last."""
    examples = _blocks("python")
    assert len(examples) == 2 and "model.fit(" in examples[1]
    for index, example in enumerate(examples):
        script = tmp_path / f"example{index}.py"
        script.write_text(example)
        result = subprocess.run(  # This checkout's tfnvp, whatever else is installed.
            [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True,
            timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert result.returncode == 0, result.stderr[-3000:]
        last_line = result.stdout.strip().splitlines()[-1]
        assert "nan" not in last_line.lower(), result.stdout


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
