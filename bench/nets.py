#!/usr/bin/env python3
"""Cost of DropIn in whole training iterations: expanded nets with DropIn against the same nets
without it, timed in one process.

  tools/caffe-env run python3 bench/nets.py [--json PATH] [--budget SECONDS]

LeNet-deep (LeNet + 5 conv layers) and AlexNet-13 (AlexNet + 5 conv layers), batch 32, DummyData,
built by expand_net's presets with and without DropIn (--no-dropin: same replicas, no DropIn).
One iteration is what `caffe train` does per step: forward, backward and the SGD update
(pycaffe's Solver.step(1)). DropIn runs mid-schedule (p = 0.5: a mask drawn every pass, the costly
case) and after it (p = 1: a copy). Medians of iterations taken in alternating blocks.
Targets: overhead <= 5% for LeNet-deep and <= 2% for AlexNet-13. Not a test: it asserts no time.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("GLOG_minloglevel", "2")  # read when caffe loads: keep net setup quiet
BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))

import caffe  # noqa: E402

import report  # noqa: E402
from dropin_caffe.netgen import prototxt, rewrite  # noqa: E402
from dropin_caffe.netgen.expand import expand_net  # noqa: E402

NETS = [("LeNet-deep", "lenet-deep", 0.05), ("AlexNet-13", "alexnet-13", 0.02)]
LENGTH = 10 ** 8  # the schedule barely moves while timing: p stays where it is put


def solver_for(folder, name, preset, dropin):
    expanded = expand_net(preset=preset, dropin=dropin, dropin_length=LENGTH, validate=False,
                          settings={"dummy_data": True, "train_batch_size": 32, "test_batch_size": 32}).net
    net_path = os.path.join(folder, "%s_%s.prototxt" % (name, "dropin" if dropin else "plain"))
    prototxt.write(net_path, expanded)
    solver_path = net_path.replace(".prototxt", "_solver.prototxt")
    with open(solver_path, "w") as f:  # no test net: only training iterations are timed
        f.write('net: "%s"\nbase_lr: 0.0001\nmomentum: 0.9\nweight_decay: 0.0005\nlr_policy: "fixed"\n'
                'max_iter: 1000000\ndisplay: 0\nsnapshot_prefix: "%s"\nsolver_mode: CPU\n' % (net_path, net_path))
    solver = caffe.SGDSolver(solver_path)
    layers = [solver.net.layers[list(solver.net._layer_names).index(layer.get("name"))]
              for layer, _ in rewrite.dropin_configs(expanded)]
    return solver, layers


def set_p(layers, p_new):
    for layer in layers:
        layer.forward_count = int(p_new * LENGTH)


def step_ms(solver, count):
    times = []
    for _ in range(count):
        start = time.perf_counter()
        solver.step(1)
        times.append((time.perf_counter() - start) * 1e3)
    return times


def compare(plain, dropin, layers, p_new, budget):
    """Median ms per iteration of both solvers, alternating blocks until `budget` seconds pass."""
    set_p(layers, p_new)
    step_ms(plain, 1), step_ms(dropin, 1)  # warm up: first passes allocate
    ours, theirs = [], []
    first = step_ms(plain, 1)[0] + step_ms(dropin, 1)[0]
    block = max(1, int(200 / first))
    end = time.time() + budget
    while time.time() < end or len(ours) < 6:
        theirs += step_ms(plain, block)
        set_p(layers, p_new)
        ours += step_ms(dropin, block)
    return statistics.median(ours), statistics.median(theirs)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the records to PATH as JSON")
    parser.add_argument("--budget", type=float, default=12.0, metavar="SECONDS",
                        help="timing time per comparison (default 12)")
    args = parser.parse_args(argv)
    caffe.set_mode_cpu()
    records, targets = [], []
    with tempfile.TemporaryDirectory(prefix="bench_nets.") as folder:
        for name, preset, target in NETS:
            plain, _ = solver_for(folder, name, preset, dropin=False)
            dropin, layers = solver_for(folder, name, preset, dropin=True)
            for p_new in (0.5, 1.0):
                ours, theirs = compare(plain, dropin, layers, p_new, args.budget)
                records.append(report.record("%s batch 32, one training iteration, p = %g" % (name, p_new),
                                             "with DropIn", ours, "without DropIn", theirs))
                targets.append(1 + target)
            del plain, dropin, layers
    print(report.table(records, targets))
    for entry, target in zip(records, targets):
        print("%s: DropIn overhead %+.1f%% (target <= %.0f%%)" % (entry["case"], 100 * (entry["ratio"] - 1),
                                                                  100 * (target - 1)))
    report.write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
