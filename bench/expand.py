#!/usr/bin/env python3
"""Time `tools/expand_net.py` expanding VGG-16 with replicas, interpreter start included.

  tools/caffe-env run python3 bench/expand.py [--json PATH] [--repeats N]

The net is VGG-16 (config D, rendered once from the built-in template to a file), expanded with
`--replicate conv3_3=2 --replicate conv4_3=2 --replicate conv5_3=2 --dropin-length 1000`, draw
off, as a fresh process each time; the baseline is the bare interpreter (`python3 -c pass`).
Two cases: `--no-validate` (the expansion itself; target under 1 s) and with validation (the
emitted net also parsed by caffe_pb2 and built by caffe.Net in TRAIN and TEST, at batch 1).
Medians of N runs. Not a test: it asserts no time.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))

import report  # noqa: E402
from dropin_caffe import templates  # noqa: E402

EXPAND = os.path.join(os.path.dirname(BENCH), "tools", "expand_net.py")
OPTIONS = ["--replicate", "conv3_3=2", "--replicate", "conv4_3=2", "--replicate", "conv5_3=2",
           "--dropin-length", "1000", "--input-shape", "data=3,224,224", "-q", "--force"]


def median_seconds(command, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the records to PATH as JSON")
    parser.add_argument("--repeats", type=int, default=7, help="runs per case (default 7)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench_expand.") as folder:
        net = os.path.join(folder, "vgg16.prototxt")
        with open(net, "w") as f:
            f.write(templates.render_net("vgg16"))
        base = median_seconds([sys.executable, "-c", "pass"], args.repeats)
        records = []
        for label, extra in (("no validation", ["--no-validate"]), ("validated in Caffe", [])):
            seconds = median_seconds([sys.executable, EXPAND, net, "-o", folder] + OPTIONS + extra, args.repeats)
            records.append(report.record("expand VGG-16, 6 replicas, %s" % label, "expand_net.py", seconds * 1e3,
                                         "python3 -c pass", base * 1e3))
    print(report.table(records, [None, None]))
    for entry in records:
        print("%s: %.2f s including interpreter start%s" % (
            entry["case"], entry["ours_ms"] / 1e3, " (target < 1 s: %s)" % (
                "met" if entry["ours_ms"] < 1e3 else "MISSED") if "no validation" in entry["case"] else ""))
    report.write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
