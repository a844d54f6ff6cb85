#!/usr/bin/env python3
"""What runs that survive interruptions cost and save: snapshots, resume, a Dask cluster.

  tools/caffe-env run python3 bench/long_runs.py [--json PATH] [--iterations N] [--repeats R]

All on LeNet-deep with DropIn (L = N/2, batch 64, 1,000 real MNIST training images), trained by the
runner as `run_experiments` trains it (`caffe train`), one run at a time:

1. Snapshot cost: a run snapshotting every N/10 iterations (the default) against the same run
   snapshotting only at its end, R interleaved repeats each; the wall time of a whole run.
2. Resume: the run killed -9 just after its snapshot at 0.9 N, then resumed: the resumed
   attempt's wall time against a fresh run's (the medians of 1.).
3. Cluster: a sweep of 4 runs (4 seeds) sent to a real `dask scheduler` on loopback with one
   `dask worker`, then with two (this machine's 2 cores: 2 BLAS threads a run, then 1); wall time.
Not a test: it asserts no time.
"""
import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))

import report  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(BENCH), "tests"))
from conftest import processes  # noqa: E402  (the tests' own process finder)
from dropin_caffe.cli import run_experiments  # noqa: E402
from dropin_caffe.experiments import config, runner, training  # noqa: E402
from dropin_caffe.experiments.cluster import Cluster  # noqa: E402


def experiment(iterations, seeds=(1,)):
    return config.Experiment("bench", "mnist", iterations, iterations // 4, list(seeds), {
        "DropIn": ["--preset", "lenet-deep", "--dropin-length", str(iterations // 2), "--p-top"]}, 1000, 500)


def train(folder, experiment, snapshot_every, cluster=None, kill_at=None):
    """Wall seconds of run_experiment on a fresh `folder`; with `kill_at`, caffe is killed -9 once
    a complete snapshot at or after that iteration is logged (the run then fails)."""
    if kill_at is not None:
        run = runner.plan_runs(experiment, folder)[0]

        def kill():
            while not any(i >= kill_at for i, _ in training.LogWatch(run.log).poll()):
                time.sleep(0.05)
            for pid in processes("--solver=" + os.path.join(run.directory, "solver.prototxt")):
                os.kill(pid, signal.SIGKILL)
        threading.Thread(target=kill, daemon=True).start()
    started = time.time()
    runs, failed = runner.run_experiment(experiment, folder, DATA, run_experiments.keywords, jobs=1,
                                         snapshot_every=snapshot_every, cluster=cluster)
    seconds = time.time() - started
    assert bool(failed) == (kill_at is not None), failed
    return seconds


def start(command, folder, name):
    return subprocess.Popen(command, cwd=folder, stdout=open(os.path.join(folder, name + ".log"), "w"),
                            stderr=subprocess.STDOUT)


def cluster_sweeps(folder, iterations):
    """{workers: wall seconds} of a 4-run sweep on a real scheduler with 1, then 2 workers."""
    scheduler_file = os.path.join(folder, "scheduler.json")
    processes = [start(["dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                        "--scheduler-file", scheduler_file], folder, "scheduler")]
    try:
        while not os.path.exists(scheduler_file) or "address" not in open(scheduler_file).read():
            time.sleep(0.2)
        address = json.load(open(scheduler_file))["address"]
        seconds = {}
        for workers in (1, 2):
            processes.append(start(["dask", "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                    "--host", "127.0.0.1"], folder, "worker%d" % workers))
            cluster = Cluster(address)
            try:
                while len(cluster.workers()) < workers:
                    time.sleep(0.2)
                seconds[workers] = train(os.path.join(folder, "sweep%d" % workers),
                                         experiment(iterations, seeds=(1, 2, 3, 4)), iterations // 10, cluster)
            finally:
                cluster.close()
        return seconds
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
            process.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the records here")
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = args.iterations
    folder = tempfile.mkdtemp(prefix="bench-long-runs.")
    global DATA
    DATA = os.path.join(folder, "data")
    train(os.path.join(folder, "warm-up"), experiment(n // 10), n)  # makes the data; warms the caches
    times = {"every": [], "end": []}
    for repeat in range(args.repeats):
        for mode, every in (("every", n // 10), ("end", n)):
            times[mode].append(train(os.path.join(folder, "%s%d" % (mode, repeat)), experiment(n), every))
            print("%s %d: %.1f s" % (mode, repeat, times[mode][-1]), flush=True)
    killed = os.path.join(folder, "killed")
    train(killed, experiment(n), n // 10, kill_at=9 * n // 10)
    resumed = train(killed, experiment(n), n // 10)
    sweeps = cluster_sweeps(folder, n)
    fresh = statistics.median(times["every"])
    records = [
        report.record("run of %d its, snapshot every %d" % (n, n // 10), "snapshots", 1000 * fresh / n,
                      "at the end only", 1000 * statistics.median(times["end"]) / n),
        report.record("run killed at %d of %d, resumed" % (9 * n // 10, n), "resumed attempt", 1000 * resumed,
                      "fresh run", 1000 * fresh),
        report.record("sweep of 4 runs x %d its on Dask" % n, "2 workers", 1000 * sweeps[2], "1 worker",
                      1000 * sweeps[1]),
    ]
    print("ms per iteration (1.), wall ms (2., 3.); snapshot runs %s s, end-only runs %s s (min-max over %d)"
          % ("-".join("%.1f" % f(times["every"]) for f in (min, max)),
             "-".join("%.1f" % f(times["end"]) for f in (min, max)), args.repeats))
    print(report.table(records, [None] * len(records)))
    report.write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
