"""Sweeps on a real Dask cluster: a `dask scheduler` and `dask worker` processes on loopback, started here."""
import json
import os
import signal
import subprocess
import threading

import pytest

from conftest import HAS_CAFFE, processes, wait_for
from dropin_caffe.cli import run_experiments
from dropin_caffe.experiments import config, runner, training

pytestmark = pytest.mark.caffe  # every test trains with `caffe train` on Dask workers
if HAS_CAFFE:  # (the embedded Caffe has Dask) else the module is still collected, and conftest skips its tests
    from dropin_caffe.experiments.cluster import Cluster

SWEEP = config.Experiment(
    "sweep", "mnist", 300, 100, [1, 2, 3],
    {"LeNet": ["--template", "lenet", "--set", "train_batch_size=16"]}, 200, 100)


def start(command, tmp_path, name):
    log = open(str(tmp_path / ("%s.log" % name)), "w")
    return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=str(tmp_path))


def start_worker(address, tmp_path, name, prefix=()):
    return start(list(prefix) + ["dask", "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                 "--host", "127.0.0.1", "--name", name], tmp_path, name)


@pytest.fixture
def scheduler(tmp_path):
    """A fresh scheduler on loopback; yields (address, the processes to stop at the end)."""
    started = []
    scheduler_file = tmp_path / "scheduler.json"
    started.append(start(["dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                          "--scheduler-file", str(scheduler_file)], tmp_path, "scheduler"))
    wait_for(scheduler_file.exists, 60, "the scheduler's address")
    wait_for(lambda: "address" in scheduler_file.read_text(), 10, "the scheduler file")
    yield json.loads(scheduler_file.read_text())["address"], started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def workers_ready(address, count):
    def ready():
        cluster = Cluster(address)
        try:
            return len(cluster.workers()) == count
        finally:
            cluster.close()
    wait_for(ready, 90, "%d workers" % count)


class Heard(training.Events):
    def __init__(self):
        self.iterations, self.finished = {}, []

    def update(self, label, iteration):
        self.iterations[label] = max(iteration, self.iterations.get(label, 0))

    def finish(self, label, iterations, verdict):
        self.finished.append((label, verdict))


def test_a_sweep_survives_a_worker_killed_mid_run(tmp_path, scheduler):
    address, started = scheduler
    started += [start_worker(address, tmp_path, "worker%d" % i) for i in (1, 2)]
    workers_ready(address, 2)
    out_dir, data_dir = str(tmp_path / "out"), str(tmp_path / "data")
    runs = runner.plan_runs(SWEEP, out_dir)
    victim = []

    def kill_a_worker_mid_run():  # once a run has a complete snapshot and trains on: its worker and caffe, -9
        def mid_run():
            for run in runs:
                watch = training.LogWatch(run.log)
                if watch.poll() and 0 < watch.iteration < SWEEP.iterations - 50:
                    victim[:] = [run]
                    return True
        wait_for(mid_run, 240, "a run past its first snapshot")
        caffe = processes("--solver=" + os.path.join(victim[0].directory, "solver.prototxt"))
        for pid, worker in caffe.items():
            os.kill(worker, signal.SIGKILL)
            os.kill(pid, signal.SIGKILL)

    killer = threading.Thread(target=kill_a_worker_mid_run, daemon=True)
    killer.start()
    heard = Heard()
    cluster = Cluster(address)
    try:
        runs, failed = runner.run_experiment(SWEEP, out_dir, data_dir, run_experiments.keywords, events=heard,
                                             snapshot_every=50, cluster=cluster)
    finally:
        cluster.close()
    killer.join()
    assert failed == [] and all(run.finished for run in runs)
    assert sum(process.poll() is None for process in started[1:]) == 1  # one worker was killed
    record = json.load(open(victim[0].record_path))
    assert record["resumes"] and record["resumes"][0]["iteration"] >= 50  # it resumed on the other worker
    for run in runs:  # finished with its final weights, reported by the workers as it trained
        assert os.path.exists(run.weights(SWEEP.iterations))
        assert heard.iterations[run.label] >= SWEEP.iterations - 50
    assert processes("--solver=" + out_dir) == {}


def test_a_folder_a_worker_cannot_see_is_refused_before_anything_runs(tmp_path, scheduler, capsys):
    """The worker runs in its own mount namespace with an empty tmpfs over the experiment's folder."""
    address, started = scheduler
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    started.append(start_worker(address, tmp_path, "blind", prefix=[
        "unshare", "--mount", "--propagation", "private", "sh", "-c", 'mount -t tmpfs none "$0" && exec "$@"',
        str(hidden)]))
    workers_ready(address, 1)
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"name": "sweep", "dataset": "mnist", "iterations": 10, "test_interval": 10,
                                "seeds": [1], "configurations": {"LeNet": ["--template", "lenet"]}}))
    code = run_experiments.main([str(path), "-o", str(hidden / "out"), "--data-dir", str(tmp_path / "data"),
                                 "--cluster", address])
    out, err = capsys.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert err.startswith("run_experiments.py: worker tcp://127.0.0.1:") and \
        "does not see %s at the same path" % (hidden / "out") in err
    assert not (tmp_path / "data").exists()  # refused before any data was made
