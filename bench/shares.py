#!/usr/bin/env python3
"""DropIn's share of a whole training iteration, by Caffe's own per-layer timing (`caffe time`).

  tools/caffe-env run python3 bench/shares.py [--json PATH] [--iterations N]

LeNet-deep (batch 64) and AlexNet-13 (batch 32), DummyData, built by expand_net's presets, every
DropIn at p = 0.5 (written as {"mode": "regularize", "p_new": 0.5}: the same mask draw and select
as gradual DropIn mid-schedule, and p stays put while timing). Each net is timed three times with
`caffe time` (forward and backward of every layer, averaged over N iterations): with the native
layers (type "DropIn", the library LD_PRELOADed), with the Python layers (type "Python"), and
without DropIn (the plain expanded net, same replicas). The DropIn layers' share is their forward
+ backward over the whole forward-backward; the Split layers Caffe inserts for the skip
connections (prev is read twice) are reported on their own line. Targets for the native layers:
<= 1% (LeNet-deep) and <= 0.75% (AlexNet-13). Not a test: it asserts no time.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(BENCH))

import report  # noqa: E402
from dropin_caffe import native  # noqa: E402
from dropin_caffe.netgen import prototxt, rewrite  # noqa: E402
from dropin_caffe.netgen.expand import expand_net  # noqa: E402

NETS = [("LeNet-deep", "lenet-deep", 64, 0.01), ("AlexNet-13", "alexnet-13", 32, 0.0075)]
LAYER_TIME = re.compile(r"\]\s+(\S+)\s+(forward|backward): ([0-9.]+) ms\.")
TOTAL = re.compile(r"Average Forward-Backward: ([0-9.]+) ms\.")


def net_file(folder, preset, batch, form):
    """The preset's TRAIN net as `form` ("native", "python" or "plain"), every DropIn at p = 0.5."""
    settings = {"dummy_data": True, "train_batch_size": batch, "test_batch_size": batch}
    net = expand_net(preset=preset, dropin=form != "plain", native=form == "native", settings=settings,
                     validate=False).net
    for layer, config in rewrite.dropin_configs(net):
        config = {"name": config["name"], "mode": "regularize", "p_new": 0.5}
        layer.get("python_param").set("param_str", json.dumps(config))
    path = os.path.join(folder, "%s_%s.prototxt" % (preset, form))
    prototxt.write(path, net)
    return path, [layer.get("name") for layer, _ in rewrite.dropin_configs(net)]


def caffe_time(path, iterations, preload=None):
    """({layer: forward + backward ms}, total forward-backward ms) as `caffe time` prints them."""
    environ = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    if preload:
        environ["LD_PRELOAD"] = preload
    done = subprocess.run(["caffe", "time", "--model=" + path, "--iterations=%d" % iterations, "--phase=TRAIN"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True, env=environ)
    if done.returncode != 0:
        raise SystemExit("caffe time failed on %s:\n%s" % (path, done.stdout[-2000:]))
    per_layer = {}
    for name, _, ms in LAYER_TIME.findall(done.stdout):
        per_layer[name] = per_layer.get(name, 0.0) + float(ms)
    return per_layer, float(TOTAL.findall(done.stdout)[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="write the records as JSON")
    parser.add_argument("--iterations", type=int, default=20, help="caffe time iterations per net")
    args = parser.parse_args(argv)
    library = native.build()
    records, targets = [], []
    with tempfile.TemporaryDirectory(prefix="bench_shares.") as folder:
        for label, preset, batch, target in NETS:
            iterations = args.iterations if preset == "lenet-deep" else max(2, args.iterations // 10)
            plain_path, _ = net_file(folder, preset, batch, "plain")
            _, plain_total = caffe_time(plain_path, iterations)
            for form in ("native", "python"):
                path, dropins = net_file(folder, preset, batch, form)
                per_layer, total = caffe_time(path, iterations, library if form == "native" else None)
                ours = sum(per_layer[name] for name in dropins)
                splits = sum(ms for name, ms in per_layer.items() if name.endswith("_split"))
                case = "%s batch %d, %s DropIn layers at p = 0.5, share of fwd+bwd" % (label, batch, form)
                records.append(dict(report.record(case, "%d DropIn layers" % len(dropins), ours,
                                                  "whole fwd+bwd", total), share=round(ours / total, 5)))
                targets.append(target if form == "native" else None)
                records.append(report.record(
                    "%s batch %d, %s: Caffe's Split layers for the skips" % (label, batch, form),
                                             "Split layers", splits, "whole fwd+bwd", total))
                targets.append(None)
            records.append(report.record("%s batch %d, plain expanded net (no DropIn)" % (label, batch),
                                         "fwd+bwd", plain_total, "whole fwd+bwd", plain_total))
            targets.append(None)
    print(report.table(records, targets))
    report.write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main())
