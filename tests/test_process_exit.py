"""trainers/process_exit.py: a command ends with its exit handlers run and its streams
flushed, without freeing what it holds; in-process callers free it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

CHILD = """
import atexit, sys
sys.path.insert(0, {repo!r})
from trainers import process_exit

class Marker:
    def __init__(self, path):
        self.path = path
    def __del__(self):
        open(self.path, "w").close()

atexit.register(lambda: open({handler!r}, "w").close())
process_exit.hold(Marker({freed!r}))
if sys.argv[1] == "release":
    process_exit.release()
sys.stdout.write("unflushed line")
sys.stderr.write("unflushed error")
process_exit.exit_now(3)
print("not reached")
"""


def _child(tmp_path: Path, mode: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    handler, freed = tmp_path / f"{mode}.handler", tmp_path / f"{mode}.freed"
    code = CHILD.format(repo=str(REPO), handler=str(handler), freed=str(freed))
    proc = subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                          timeout=60)
    return proc, handler, freed


def test_exit_now_runs_exit_handlers_flushes_and_does_not_free_what_is_held(tmp_path):
    proc, handler, freed = _child(tmp_path, "hold")
    assert proc.returncode == 3, proc.stderr
    assert (proc.stdout, proc.stderr) == ("unflushed line", "unflushed error")
    assert handler.exists()  # atexit handlers ran (logging's flush, autograph's files, ...)
    assert not freed.exists()  # The held object's destructor never ran.


def test_release_frees_what_is_held(tmp_path):
    proc, handler, freed = _child(tmp_path, "release")
    assert proc.returncode == 3, proc.stderr
    assert handler.exists() and freed.exists()


CRASH = """
import sys
sys.path.insert(0, {repo!r})
from trainers import process_exit, train

class Marker:
    def __del__(self):
        open({freed!r}, "w").close()

def fault(flagfile):
    process_exit.hold(Marker())  # As a training run holds its input iterator.
    raise RuntimeError("a fault of the code")

train.guarded_execute = fault
train.main(["train.py"])
"""


def test_a_crashing_command_prints_its_traceback_and_ends_the_same_way(tmp_path):
    """An error that is not the user's (``guarded_execute`` re-raises it): the traceback,
    status 1, and the process ends without freeing what the run held."""
    freed = tmp_path / "freed"
    proc = subprocess.run([sys.executable, "-c", CRASH.format(repo=str(REPO), freed=str(freed))],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().endswith("RuntimeError: a fault of the code")
    assert not freed.exists()
