"""`caffe-env run` as a user starts long runs: in its real bubblewrap sandbox (DROPIN_CAFFE_EMBEDDED=1:
the tests' own Caffe is the embedded one, which has bwrap), signals forwarded, detached with setsid nohup."""
import json
import os
import signal
import subprocess

import pytest

from conftest import REPO, processes, wait_for

pytestmark = pytest.mark.caffe  # every test runs `caffe-env run` with the tests' own embedded Caffe

CAFFE_ENV = os.path.join(REPO, "tools", "caffe-env")
SANDBOXED = dict(os.environ, DROPIN_CAFFE_EMBEDDED="1")
LONG = {"name": "long", "dataset": "mnist", "train_count": 200, "test_count": 100, "iterations": 30,
        "test_interval": 10, "seeds": [1, 2],
        "configurations": {"LeNet": ["--template", "lenet", "--set", "train_batch_size=16"]}}


def experiment(tmp_path, **changes):
    path = tmp_path / "long.json"
    path.write_text(json.dumps(dict(LONG, **changes)))
    out_dir, data_dir = str(tmp_path / "out"), str(tmp_path / "data")
    command = [CAFFE_ENV, "run", "python3", os.path.join(REPO, "tools", "run_experiments.py"), str(path),
               "-o", out_dir, "--data-dir", data_dir]
    runs = [os.path.join(out_dir, "LeNet", "seed%d" % seed) for seed in LONG["seeds"]]
    return command, out_dir, runs


def finished(run_dir):
    try:
        with open(os.path.join(run_dir, "record.json")) as f:
            return bool(json.load(f)["finished"])
    except (OSError, ValueError):
        return False


def test_signals_reach_the_command_and_its_exit_code_comes_back():
    script = ("import signal, sys, time\nsignal.signal(signal.SIGTERM, lambda *a: sys.exit(3))\n"
              "print('ready', flush=True)\ntime.sleep(60)")
    process = subprocess.Popen([CAFFE_ENV, "run", "python3", "-c", script], env=SANDBOXED, stdout=subprocess.PIPE,
                               universal_newlines=True)
    assert process.stdout.readline() == "ready\n"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 3  # the command's handler ran: forwarded, not killed
    assert subprocess.run([CAFFE_ENV, "run", "sh", "-c", "kill -9 $$"], env=SANDBOXED).returncode == 128 + 9


def test_sigterm_to_caffe_env_stops_every_caffe_and_marks_nothing_finished(tmp_path):
    command, out_dir, runs = experiment(tmp_path, iterations=100000)
    process = subprocess.Popen(command, env=SANDBOXED, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               universal_newlines=True)
    try:
        wait_for(lambda: len(processes("--solver=" + out_dir)) == 2, 180, "both runs' caffe to start")
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, err
    assert err.strip().splitlines()[-1] == ("run_experiments.py: stopped; 0 of 2 runs finished; run the same command "
                                            "to continue (the others resume from their snapshots)")
    assert processes("--solver=" + out_dir) == {}
    for run_dir in runs:
        assert not finished(run_dir)
        assert any(name.endswith(".solverstate") for name in os.listdir(run_dir))  # Caffe's snapshot on stop


def test_a_run_started_with_setsid_nohup_outlives_the_shell_that_started_it(tmp_path):
    command, out_dir, runs = experiment(tmp_path)
    log = tmp_path / "nohup.log"
    shell = "setsid nohup %s > %s 2>&1 < /dev/null &\nexit 0" % (" ".join(command), log)
    assert subprocess.run(["sh", "-c", shell], env=SANDBOXED, timeout=30).returncode == 0  # the shell is gone
    wait_for(lambda: all(finished(run_dir) for run_dir in runs), 300, "the detached runs: %s" % log)
    wait_for(lambda: "plot:" in log.read_text(), 60, "the detached runner's report")


def test_the_embedded_python_runs_the_dask_commands():
    for command in (["dask", "scheduler", "--help"], ["dask", "worker", "--help"]):
        assert subprocess.run(command, stdout=subprocess.DEVNULL).returncode == 0
    import dask
    import distributed
    assert dask.__version__ == distributed.__version__ == "2024.8.0"
