"""bench/first_result.py runs a case in a fresh process and reports its breakdown."""

from __future__ import annotations

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _bench(tmp_path, *args: str, env: dict | None = None) -> tuple[str, list[dict]]:
    """``bench/first_result.py`` on the digits model, batch 4: (its table, its results)."""
    out = tmp_path / "first.json"
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "bench", "first_result.py"), "--models=digits",
         "--repeats=1", "--batch=4", f"--out={out}", *args],
        capture_output=True, text=True, cwd=REPO, timeout=600, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout, json.loads(out.read_text())["results"]


def test_a_case_reports_import_build_first_and_steady_times(tmp_path):
    stdout, results = _bench(tmp_path, "--paths=sample", "--traced_once=both")
    assert [(r["model"], r["path"], r["traced_once"], r["batch"]) for r in results] == [
        ("digits", "sample", True, 4), ("digits", "sample", False, 4)]
    for r in results:
        assert 0 < r["steady"] <= r["first"] and r["import"] > 0 and r["build"] > 0
        assert r["overhead"] == r["first"] - r["steady"]
    assert stdout.count("| digits | sample |") == 2


def test_a_case_runs_the_kernels_tfnvp_chooses_and_says_which(tmp_path):
    """Without TF_ENABLE_ONEDNN_OPTS, tfnvp (imported first, as the README does) turns
    TensorFlow's oneDNN kernels on, as the trainer does; with it set to 0 they stay off.  The
    case reports what its process ran, in the results and the table."""
    env = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    for setting, expected in ((None, True), ("0", False)):
        case_env = env if setting is None else dict(env, TF_ENABLE_ONEDNN_OPTS=setting)
        stdout, [result] = _bench(tmp_path, "--paths=log_prob", env=case_env)
        assert result["onednn"] is expected, setting
        assert stdout.rstrip().endswith(f"| {expected} |"), stdout


def test_the_user_paths_take_the_chosen_adam(tmp_path):
    stdout, [result] = _bench(tmp_path, "--paths=user_loop", "--optimizer=fused")
    assert (result["path"], result["optimizer"]) == ("user_loop", "fused")
    assert "| digits | user_loop | " in stdout and "| fused |" in stdout
