"""Writing a dataset's LMDBs and mean image as Caffe's own converters do.

The records are those of Caffe's converters: a `Datum` of uint8 pixels (channels, height, width,
data) and its label, keyed "%08d" (MNIST's converter) or "%05d" (CIFAR-10's) by position. Where
Caffe's `convert_mnist_data`, `convert_cifar_data` and `compute_image_mean` are on PATH they write
the databases; elsewhere a Python writer (caffe_pb2 and the lmdb module) writes the same bytes.
`convert_cifar_data` converts exactly 5 x 10000 + 10000 images, so subsets of CIFAR-10 go through
the Python writer. The mean is compute_image_mean's: a float32 sum divided by the count.
"""
import importlib
import os
import shutil
import struct
import subprocess

import numpy as np

from ...errors import ConfigError, DropInCaffeError
from .sources import (
    CIFAR_BATCH,
    CIFAR_TEST,
    CIFAR_TRAIN,
    CIFAR_TRAIN_BATCHES,
    IDX_IMAGES,
    IDX_LABELS,
    Split,
    output_paths,
)

CONVERTERS = {"idx": "convert_mnist_data", "cifar": "convert_cifar_data"}
WRITERS = ("auto", "caffe", "python")


def _tool(name, writer):
    """The path of Caffe tool `name` if this writer uses it, else None (then Python writes)."""
    if writer == "python":
        return None
    path = shutil.which(name)
    if path is None and writer == "caffe":
        raise ConfigError("--writer caffe needs Caffe's %s on PATH; run through tools/caffe-env run, or use "
                          "--writer auto" % name)
    return path


def tools_for(data, train, test, writer):
    """(converter, mean tool): the Caffe tools that will write, None where Python writes. Checks
    that the Python writer can import what it needs before anything is written."""
    converter = _tool(CONVERTERS[data.kind], writer)
    full_cifar = len(train.labels) == CIFAR_TRAIN_BATCHES * CIFAR_BATCH and len(test.labels) == CIFAR_BATCH
    if converter and data.kind == "cifar" and not full_cifar:
        if writer == "caffe":
            raise ConfigError("--writer caffe: convert_cifar_data converts exactly %d training and %d test images, "
                              "got %d and %d; use --writer auto or python for a subset"
                              % (CIFAR_TRAIN_BATCHES * CIFAR_BATCH, CIFAR_BATCH, len(train.labels),
                                 len(test.labels)))
        converter = None
    mean_tool = _tool("compute_image_mean", writer)
    needs = ([] if converter else ["lmdb"]) + ([] if converter and mean_tool else ["caffe.proto.caffe_pb2"])
    for module in needs:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError("the Python writer needs the %s module (%s); run through tools/caffe-env run, or "
                              "install it (lmdb: pip install lmdb; caffe_pb2: pycaffe)" % (module, error)) from None
    return converter, mean_tool


def _run(argv, what):
    done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True,
                          env=dict(os.environ, GLOG_minloglevel="1"))
    if done.returncode != 0:
        last = done.stdout.strip().splitlines()[-1:] or ["no output"]
        raise DropInCaffeError("%s failed (exit code %d) while writing %s: %s"
                               % (os.path.basename(argv[0]), done.returncode, what, last[0]))


def _write_idx(path, array, magic):
    dims = array.shape if magic == IDX_LABELS else (array.shape[0],) + array.shape[2:]
    with open(path, "wb") as f:
        f.write(struct.pack(">%dI" % (1 + len(dims)), magic, *dims))
        f.write(np.ascontiguousarray(array).tobytes())


def _write_lmdb(path, split, key_digits):
    """The records Caffe's converters write: Datum (C, H, W, uint8 data, label) by "%0<digits>d" key."""
    import lmdb
    from caffe.proto import caffe_pb2

    count, channels, height, width = split.images.shape
    map_size = count * (channels * height * width + 64) * 2 + (64 << 20)
    database = lmdb.open(path, map_size=map_size, subdir=True)
    try:
        datum = caffe_pb2.Datum(channels=channels, height=height, width=width)
        for start in range(0, count, 1000):
            with database.begin(write=True) as txn:
                for i in range(start, min(count, start + 1000)):
                    datum.data = split.images[i].tobytes()
                    datum.label = int(split.labels[i])
                    txn.put(b"%0*d" % (key_digits, i), datum.SerializeToString())
    finally:
        database.close()


def _lmdb_entries(path):
    """How many records the LMDB at `path` holds; None where the lmdb module is missing."""
    try:
        import lmdb
    except ImportError:
        return None
    database = lmdb.open(path, readonly=True, lock=False, subdir=True)
    try:
        return database.stat()["entries"]
    finally:
        database.close()


def _write_mean(path, images):
    """compute_image_mean's result: per-pixel float32 sum divided by the count, shape 1xCxHxW."""
    from caffe.proto import caffe_pb2

    count, channels, height, width = images.shape
    total = images.reshape(count, -1).sum(axis=0, dtype=np.int64)
    mean = total.astype(np.float32) / np.float32(count)
    blob = caffe_pb2.BlobProto(num=1, channels=channels, height=height, width=width)
    blob.data.extend(mean.tolist())
    with open(path, "wb") as f:
        f.write(blob.SerializeToString())


def build(data, stage, train, test, tools, log):
    """Write the LMDBs and the mean into `stage` with `tools` (from `tools_for`)."""
    paths = output_paths(data.name, stage)
    converter, mean_tool = tools
    if converter and data.kind == "idx":
        for split, part in ((train, "train"), (test, "test")):
            log("%s: writing %s LMDB (%d images) with %s" % (data.name, part, len(split.labels), converter))
            images, labels = (os.path.join(stage, part + "-%s-idx" % k) for k in ("images", "labels"))
            _write_idx(images, split.images, IDX_IMAGES)
            _write_idx(labels, split.labels, IDX_LABELS)
            _run([converter, images, labels, paths[part + "_lmdb"], "--backend=lmdb"], paths[part + "_lmdb"])
            os.remove(images)
            os.remove(labels)
    elif converter:
        log("%s: writing train and test LMDBs (%d + %d images) with %s"
            % (data.name, len(train.labels), len(test.labels), converter))
        batches = os.path.join(stage, "batches")
        os.mkdir(batches)
        for base, split in _cifar_batches(train, test):
            records = np.concatenate([split.labels[:, None], split.images.reshape(len(split.labels), -1)], axis=1)
            with open(os.path.join(batches, base + ".bin"), "wb") as f:
                f.write(records.tobytes())
        _run([converter, batches, stage, "lmdb"], "the %s LMDBs" % data.name)
        shutil.rmtree(batches)
    else:
        for split, part in ((train, "train"), (test, "test")):
            log("%s: writing %s LMDB (%d images) with the Python writer" % (data.name, part, len(split.labels)))
            _write_lmdb(paths[part + "_lmdb"], split, data.key_digits)
    for split, part in ((train, "train"), (test, "test")):
        entries = _lmdb_entries(paths[part + "_lmdb"])
        if entries is not None and entries != len(split.labels):
            raise DropInCaffeError("%s holds %d records after conversion, expected %d; nothing was kept"
                                   % (paths[part + "_lmdb"], entries, len(split.labels)))
    log("%s: computing the mean training image with %s" % (data.name, mean_tool or "numpy"))
    if mean_tool:
        _run([mean_tool, paths["train_lmdb"], paths["mean_file"], "--backend=lmdb"], paths["mean_file"])
    else:
        _write_mean(paths["mean_file"], train.images)


def _cifar_batches(train, test):
    for i, base in enumerate(CIFAR_TRAIN):
        part = slice(i * CIFAR_BATCH, (i + 1) * CIFAR_BATCH)
        yield base, Split(train.images[part], train.labels[part])
    yield CIFAR_TEST, test

