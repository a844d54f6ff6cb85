"""Runs that survive interruptions: records, snapshots, resume after a crash, definitions that change."""
import csv
import json
import os
import signal
import threading

import pytest

from conftest import processes, wait_for
from dropin_caffe.cli import run_experiments
from dropin_caffe.experiments import training

# LeNet-deep with 2 DropIn layers entering over L = 200 of 400 iterations, the DropIn p in Caffe's log.
L = 200
RESUMABLE = {"name": "resumable", "dataset": "mnist", "train_count": 200, "test_count": 100,
             "iterations": 400, "test_interval": 40, "seeds": [1],
             "configurations": {"DropIn": ["--preset", "lenet-deep", "--depth", "2", "--dropin-length", str(L),
                                           "--p-top", "--set", "train_batch_size=16"]}}


def experiment_file(tmp_path, **changes):
    path = tmp_path / "experiment.json"
    path.write_text(json.dumps(dict(RESUMABLE, **changes)))
    return str(path)


def record(run_dir):
    with open(os.path.join(run_dir, "record.json")) as f:
        return json.load(f)


def test_a_log_shows_a_snapshot_complete_only_once_a_line_follows_it(tmp_path):
    state = ("I1201 10:00:00.1 1 sgd_solver.cpp:290] Snapshotting solver state to binary proto file "
             "/r/s_iter_%d.solverstate\n")
    log = tmp_path / "caffe.log"
    log.write_text(state % 10 + "I1201 Iteration 11, loss = 1\n" + state % 20)
    watch = training.LogWatch(str(log))
    assert watch.poll() == [(10, "/r/s_iter_10.solverstate")] and watch.iteration == 11  # 20 may be half-written
    with open(str(log), "a") as f:
        f.write(training.RESUMING + " s_iter_10.solverstate at iteration 10\nI1201 Iteration 10, loss = 1\n")
    assert watch.poll() == []  # the attempt that wrote 20 ended right after: 20 is not known whole
    with open(str(log), "a") as f:
        f.write(state % 20 + "I1201 Iteration 21")  # a line still being written completes nothing yet
    assert watch.poll() == []
    with open(str(log), "a") as f:
        f.write(", loss = 1\n")
    assert watch.poll() == [(20, "/r/s_iter_20.solverstate")]


@pytest.mark.caffe
def test_a_run_killed_mid_way_resumes_from_its_snapshot_and_its_schedule_goes_on(tmp_path, capsys):
    """caffe killed -9 at iteration >= 150 (snapshots every 50): the run fails; the same command
    resumes it from its latest snapshot and it ends at max_iter, every logged p on p = i / L."""
    path, out_dir = experiment_file(tmp_path), str(tmp_path / "out")
    argv = [path, "-o", out_dir, "--data-dir", str(tmp_path / "data"), "--snapshot-every", "50"]
    run_dir = os.path.join(out_dir, "DropIn", "seed1")
    killed = []

    def kill_caffe_mid_way():
        def far_enough():
            watch = training.LogWatch(os.path.join(run_dir, "caffe.log"))
            return any(i >= 100 for i, _ in watch.poll()) and watch.iteration >= 150
        wait_for(far_enough, 240, "iteration 150")
        for pid in processes("--solver=" + os.path.join(run_dir, "solver.prototxt")):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_caffe_mid_way, daemon=True)
    killer.start()
    assert run_experiments.main(argv) == 1  # its caffe died: that run failed
    killer.join()
    assert killed and not record(run_dir)["finished"]
    capsys.readouterr()

    assert run_experiments.main(argv) == 0
    out, err = capsys.readouterr()
    resumes = record(run_dir)["resumes"]
    assert len(resumes) == 1 and resumes[0]["iteration"] >= 100 and resumes[0]["from"].endswith(".solverstate")
    assert record(run_dir)["finished"]["weights"] == "snapshot_iter_400.caffemodel"
    snapshots = sorted(name for name in os.listdir(run_dir) if name.startswith("snapshot"))
    assert snapshots == ["snapshot_iter_400.caffemodel"]
    log = open(os.path.join(run_dir, "caffe.log")).read()
    assert "Resuming from" in log and log.count(training.RESUMING) == 1
    with open(os.path.join(out_dir, "results.csv")) as f:
        rows = {int(row["iteration"]): row for row in csv.DictReader(f)}
    assert min(rows) == 0 and max(rows) == 400
    logged = {i: float(row["p/conv2_1_dropin_p"]) for i, row in rows.items() if row["p/conv2_1_dropin_p"]}
    assert len([i for i in logged if i > resumes[0]["iteration"]]) > 10
    for iteration, p in logged.items():  # before and after the resume, on the schedule
        assert p == pytest.approx(min(1.0, iteration / L)), iteration


@pytest.mark.caffe
def test_a_changed_definition_reruns_the_run_and_restart_reruns_all(tmp_path, capsys):
    path = experiment_file(tmp_path, iterations=20, test_interval=10, seeds=[1, 2])
    argv = [path, "-o", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")]
    assert run_experiments.main(argv) == 0
    run_dir = os.path.join(str(tmp_path / "out"), "DropIn", "seed1")
    capsys.readouterr()

    assert run_experiments.main(argv + ["--iterations", "30"]) == 0
    out, err = capsys.readouterr()
    assert "already finished" not in err
    assert "run %s: its definition changed (iterations 20 -> 30); starting it over" % run_dir in err
    assert record(run_dir)["finished"]["iterations"] == 30
    assert not os.path.exists(os.path.join(run_dir, "snapshot_iter_20.caffemodel"))
    assert "snapshot_iter_30.caffemodel" in out  # the printed export command names weights that exist

    assert run_experiments.main(argv + ["--iterations", "30"]) == 0
    assert "2 of 2 runs already finished" in capsys.readouterr()[1]
    os.utime(os.path.join(run_dir, "record.json"), (0, 0))
    assert run_experiments.main(argv + ["--iterations", "30", "--restart"]) == 0
    assert "already finished" not in capsys.readouterr()[1]
    assert record(run_dir)["finished"]["iterations"] == 30
    assert os.path.getmtime(os.path.join(run_dir, "record.json")) > 0  # written again


@pytest.mark.caffe
def test_slow_iterations_snapshot_on_a_timer(tmp_path):
    """No snapshot interval, a timer of 1 s: the runner asks Caffe for snapshots (SIGHUP) as it trains."""
    net = tmp_path / "net.prototxt"
    net.write_text("""
        layer { name: "data" type: "DummyData" top: "data" top: "label"
          dummy_data_param { shape { dim: 64 dim: 256 } shape { dim: 64 }
            data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 0 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
          inner_product_param { num_output: 256 weight_filler { type: "xavier" } } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
        """)
    run_dir = tmp_path / "run"
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 100000000\ndisplay: 100\n'
                      'snapshot_prefix: "%s"\nsolver_mode: CPU\n' % (net, run_dir / "snapshot"))
    task = training.Task(training.Run("timer", 1, str(run_dir), {}), str(solver), 100000000, threads=1,
                         snapshot_seconds=1, tag="timer test")
    states = []

    class Watch(training.Events):
        def update(self, label, iteration):
            states[:] = [i for i, _ in training.LogWatch(str(run_dir / "caffe.log")).poll()]
            if len(states) >= 3:
                training.stop(task.tag)

    timer = threading.Timer(60, training.stop, [task.tag])
    timer.start()
    try:
        training.execute(task, Watch())
    finally:
        timer.cancel()
    snapshots = sorted(name for name in os.listdir(str(run_dir)) if name.startswith("snapshot_iter_"))
    assert len(states) >= 3 and len(snapshots) == 2, snapshots  # one pair kept: the older ones were dropped
    assert record(str(run_dir))["finished"] is None

