#!/usr/bin/env python3
"""Speed of the DropIn and Resize layers against Caffe's own layers, timed in one process.

  tools/caffe-env run python3 bench/layers.py [--json PATH] [--budget SECONDS]

Every layer runs as Caffe runs it: a one-layer caffe.Net (Input layers feeding it,
`force_backward: true`) timed over net._forward + net._backward, on the same random blobs.

- DropIn in TRAIN, {"mode": "regularize", "p_new": 0.5}, against Caffe's native Dropout
  (dropout_ratio 0.5, TRAIN, C++) and against np.copyto of one blob (the memory-bound floor; its
  two buffers page-aligned plus an odd number of cache lines apart, so the destination is not
  4K-aliased with the source), for 64x50x8x8 (LeNet), 100x32x32x32 (CIFAR) and 256x4096 (fc).
  Targets: Python layer <= 1x Dropout, <= 4x the copy; native layer (type "DropIn", built and
  loaded by dropin_caffe.native) <= 0.3x Dropout, <= 3.5x the copy on the two large blobs (its
  fwd+bwd moves 6 blobs' bytes, the copy 2).
- Resize 2x bilinear upsampling of 64x50x8x8 against native Deconvolution (num_output = group
  = 50, kernel 4, stride 2, pad 1, bilinear filler, lr_mult 0 as a fixed upsampling layer has).
  Targets: Python <= 2x, native ("DropInResize") <= 0.2x. The two agree away from the border
  (Deconvolution zero-pads, Resize clamps).

Times are medians of repeated calls, ours and the baseline alternating in blocks. The table goes
to stdout, followed by where DropIn's time goes (our numpy kernels run in sequence outside Caffe;
the rest is Caffe's Python-layer call). --json PATH writes one record per comparison, {"case", "ours", "ours_ms",
"baseline", "baseline_ms", "ratio"}, ratio = ours_ms / baseline_ms. Not a test: it asserts no time.
"""
import argparse
import os
import sys
import tempfile
import time

os.environ.setdefault("GLOG_minloglevel", "2")  # read when caffe loads: keep net setup quiet
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import caffe  # noqa: E402
import numpy as np  # noqa: E402

import report  # noqa: E402
from dropin_caffe import kernels  # noqa: E402
from report import record  # noqa: E402

SHAPES = [("LeNet", (64, 50, 8, 8)), ("CIFAR", (100, 32, 32, 32)), ("fc", (256, 4096))]
RESIZE_SHAPE, RESIZE_TO = (64, 50, 8, 8), 16
TARGETS = {("Python", "Dropout"): 1.0, ("Python", "np.copyto"): 4.0, ("Python", "Deconvolution"): 2.0,
           ("native", "Dropout"): 0.3, ("native", "np.copyto"): 3.5, ("native", "Deconvolution"): 0.2}
NATIVE_TYPES = {"DropIn": "DropIn", "Resize": "DropInResize"}


def shape_text(shape):
    return "x".join(map(str, shape))


def input_layers(shapes):
    return "".join('layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }\n'
                   % (name, name, " ".join("dim: %d" % d for d in shape)) for name, shape in shapes)


def our_type(kind, native):
    return NATIVE_TYPES[kind] if native else "Python"


def dropin_net(shape, native=False):
    return input_layers([("prev", shape), ("new", shape)]) + (
        'layer { name: "dropin" type: "%s" bottom: "prev" bottom: "new" top: "out"\n'
        '  param { lr_mult: 0 decay_mult: 0 }\n'
        '  python_param { module: "dropin_caffe.layers" layer: "DropIn"\n'
        '    param_str: \'{"name": "dropin", "mode": "regularize", "p_new": 0.5, "seed": 1}\' } }\n'
        % our_type("DropIn", native))


def dropout_net(shape):
    return input_layers([("data", shape)]) + (
        'layer { name: "drop" type: "Dropout" bottom: "data" top: "out"\n'
        '  dropout_param { dropout_ratio: 0.5 } }\n')


def resize_net(shape, size, native=False):
    return input_layers([("data", shape)]) + (
        'layer { name: "resize" type: "%s" bottom: "data" top: "out"\n'
        '  python_param { module: "dropin_caffe.layers" layer: "Resize"\n'
        '    param_str: \'{"name": "resize", "height": %d, "width": %d}\' } }\n'
        % (our_type("Resize", native), size, size))


def deconv_net(shape, size):
    channels, factor = shape[1], size // shape[2]
    return input_layers([("data", shape)]) + (
        'layer { name: "up" type: "Deconvolution" bottom: "data" top: "out"\n'
        '  param { lr_mult: 0 decay_mult: 0 }\n'
        '  convolution_param { num_output: %d group: %d kernel_size: %d stride: %d pad: %d\n'
        '    bias_term: false weight_filler { type: "bilinear" } } }\n'
        % (channels, channels, 2 * factor, factor, factor // 2))


class OneLayerNet:
    """A TRAIN caffe.Net around one layer; `run()` is one forward and one backward pass."""

    def __init__(self, folder, name, layers, inputs, top_diff):
        path = os.path.join(folder, name + ".prototxt")
        with open(path, "w") as handle:
            handle.write('name: "%s"\nforce_backward: true\n%s' % (name, layers))
        self.net = caffe.Net(path, caffe.TRAIN)
        for blob, value in inputs.items():
            self.net.blobs[blob].data[...] = value
        self.net.blobs["out"].diff[...] = top_diff
        self.last = len(self.net.layers) - 1

    def run(self):
        self.net._forward(0, self.last)
        self.net._backward(self.last, 0)


def time_calls(run, count):
    times = []
    for _ in range(count):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return times


def compare(ours, baseline, budget, blocks=5):
    """Median ms of `ours` and `baseline`, alternating blocks of calls within about `budget` s."""
    estimate = [min(time_calls(run, 3)) for run in (ours, baseline)]  # also the warm-up
    per_block = max(2, min(100, int(budget / blocks / sum(estimate))))
    samples = ([], [])
    for _ in range(blocks):
        for run, times in zip((ours, baseline), samples):
            times.extend(time_calls(run, per_block))
    return tuple(1e3 * float(np.median(times)) for times in samples)


def sequence_ms(parts, budget):
    """Median ms of each (name, run) part when they run one after another, as in a layer's pass
    (so each sees the caches the previous ones left, unlike a part repeated on its own)."""
    estimate = sum(min(time_calls(run, 3)) for _, run in parts)
    times = np.empty((max(5, min(500, int(budget / estimate))), len(parts)))
    for row in times:
        for column, (_, run) in enumerate(parts):
            start = time.perf_counter()
            run()
            row[column] = time.perf_counter() - start
    return [(name, 1e3 * float(ms)) for (name, _), ms in zip(parts, np.median(times, axis=0))]


def apart(shape, lines=33):
    """Two float32 arrays of `shape`, each page-aligned plus an odd number of 64-byte lines apart
    from the other, so a copy between them is not slowed by 4K aliasing."""
    size, page = int(np.prod(shape)) * 4, 4096
    raw = np.empty(2 * size + 3 * page + 64 * lines, np.uint8)
    first = -raw.ctypes.data % page
    second = first + -(-size // page) * page + page + 64 * lines
    return tuple(raw[at:at + size].view(np.float32).reshape(shape) for at in (first, second))


def bench_dropin(folder, label, shape, budget, data, native):
    prev, new, top_diff = (data.standard_normal(shape).astype(np.float32) for _ in range(3))
    baseline = OneLayerNet(folder, "dropout", dropout_net(shape), {"data": prev}, top_diff)
    source, copy = apart(shape)
    source[...] = prev
    name = "%s %s" % (label, shape_text(shape))
    records = []
    for kind, is_native in [("Python", False)] + [("native", True)] * native:
        ours = OneLayerNet(folder, "dropin", dropin_net(shape, is_native), {"prev": prev, "new": new}, top_diff)
        ours_ms, dropout_ms = compare(ours.run, baseline.run, budget)
        ours_again_ms, copy_ms = compare(ours.run, lambda: np.copyto(copy, source), budget / 2)
        ours_name = "%s DropIn fwd+bwd" % kind
        records += [record("%s DropIn vs Dropout, %s" % (kind, name), ours_name, ours_ms, "Dropout fwd+bwd",
                           dropout_ms),
                    record("%s DropIn vs copy, %s" % (kind, name), ours_name, ours_again_ms, "np.copyto", copy_ms)]
        if not is_native:
            python_ms = ours_ms
    # Where the Python layer's time goes: our kernels on their own, on the same blobs; the rest is
    # the layer call.
    rng, mask = np.random.default_rng(1), np.empty(shape, np.int32)
    out, prev_diff, new_diff = (np.empty_like(prev) for _ in range(3))
    parts = [("mask", lambda: kernels.sample_mask(rng, 0.5, shape, out=mask)),
             ("forward", lambda: kernels.dropin_forward(prev, new, mask, out=out)),
             ("backward", lambda: kernels.dropin_backward(top_diff, mask, prev_diff, new_diff))]
    split = sequence_ms(parts, budget / 2)
    split.append(("layer call", python_ms - sum(ms for _, ms in split)))
    # The floor checked against a plain copy between two arrays numpy places itself, in the same run:
    # when those land 4K-aliased the plain copy is the slower one.
    plain_source, plain_copy = np.empty_like(source), np.empty_like(source)
    plain_source[...] = prev
    apart_ms, plain_ms = compare(lambda: np.copyto(copy, source), lambda: np.copyto(plain_copy, plain_source),
                                 budget / 2)
    return records, (name, copy_ms, 2 * source.nbytes, split, apart_ms, plain_ms,
                     (plain_copy.ctypes.data - plain_source.ctypes.data) % 4096)


def bench_resize(folder, shape, size, budget, data, native):
    image = data.standard_normal(shape).astype(np.float32)
    top_diff = data.standard_normal(shape[:2] + (size, size)).astype(np.float32)
    baseline = OneLayerNet(folder, "deconv", deconv_net(shape, size), {"data": image}, top_diff)
    baseline.run()
    interior = (slice(None), slice(None), slice(1, size - 1), slice(1, size - 1))
    name = "%s -> %dx%d bilinear" % (shape_text(shape), size, size)
    records, agree = [], 0.0
    for kind, is_native in [("Python", False)] + [("native", True)] * native:
        ours = OneLayerNet(folder, "resize", resize_net(shape, size, is_native), {"data": image}, top_diff)
        ours.run()
        difference = ours.net.blobs["out"].data[interior] - baseline.net.blobs["out"].data[interior]
        agree = max(agree, float(np.abs(difference).max()))
        ours_ms, deconv_ms = compare(ours.run, baseline.run, budget)
        records.append(record("%s Resize vs Deconvolution, %s" % (kind, name), "%s Resize fwd+bwd" % kind,
                              ours_ms, "Deconvolution fwd+bwd", deconv_ms))
    return records, agree


def target_of(entry):
    ours, baseline = entry["ours"].split()[0], entry["baseline"].split()[0]
    if ours == "native" and baseline == "np.copyto" and "LeNet" in entry["case"]:
        return None  # the copy target is for the large blobs, where memory bandwidth bounds both
    return TARGETS[(ours, baseline)]


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", metavar="PATH", help="also write the records to PATH as JSON")
    parser.add_argument("--budget", type=float, default=3.0, metavar="SECONDS",
                        help="timing time per comparison (default 3; the whole run is about 8x this)")
    parser.add_argument("--no-native", action="store_true", help="time the Python layers only")
    args = parser.parse_args(argv)
    caffe.set_mode_cpu()
    if not args.no_native:
        from dropin_caffe import native
        native.load()  # builds on first use: before any net names the native types
    data = np.random.default_rng(0)
    records, splits = [], []
    with tempfile.TemporaryDirectory(prefix="bench_layers.") as folder:
        for label, shape in SHAPES:
            found, split = bench_dropin(folder, label, shape, args.budget, data, not args.no_native)
            records += found
            splits.append(split)
        resize, agree = bench_resize(folder, RESIZE_SHAPE, RESIZE_TO, args.budget, data, not args.no_native)
        records += resize
    print(report.table(records, [target_of(entry) for entry in records]))
    print("\nThe copy floor: bytes moved (read + written), the bandwidth they imply, and the same copy between"
          "\ntwo arrays numpy placed itself (their distance modulo 4096 bytes; 4K aliasing slows a copy):")
    for name, copy_ms, moved, _, apart_ms, plain_ms, offset in splits:
        print("  %-22s %8.1f MB in %.3f ms = %.1f GB/s; apart %.3f ms, numpy's own %.3f ms (offset %d)"
              % (name, moved / 1e6, copy_ms, moved / copy_ms / 1e6, apart_ms, plain_ms, offset))
    print("\nWhere the Python DropIn's time goes (ms): our numpy kernels run in sequence; the layer call is"
          "\nthe net's time minus theirs (Caffe and pycaffe overhead; near or below 0 means lost in the noise):")
    for name, copy_ms, _, split, *_ in splits:
        print("  %-22s %s   (copy %.3f)" % (name, "  ".join("%s %.3f" % part for part in split), copy_ms))
    print("\nResize and Deconvolution outputs away from the border: max |difference| %.2g" % agree)
    report.write_json(args.json, records)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
