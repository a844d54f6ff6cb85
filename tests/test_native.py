"""The native layers' build, load and registration: caching, loading twice, snapshots shared with
the Python layers, and the messages when something is missing."""
import ctypes
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from conftest import HAS_CAFFE, REPO, input_layer, python_layer
from dropin_caffe import native
from dropin_caffe.cli.native import main

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe


@pytest.fixture(scope="session")
def library():
    return native.load()


def counter_net(write, native_type, name):
    text = input_layer("prev", (2, 3)) + input_layer("new", (2, 3))
    text += python_layer("drop", "DropIn", ["prev", "new"], ["out", "p"], '{"name": "drop", "length": %d}' % 2 ** 26)
    if native_type:
        text = text.replace('type: "Python"', 'type: "DropIn"')
    return write(name, text)


@pytest.mark.caffe
def test_load_twice_and_after_import_caffe_is_harmless(library):
    assert native.load() == library == native.path()
    ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    assert os.path.realpath(native.preload_path()) == library
    assert native.info()["built"] == "yes"


@pytest.mark.caffe
def test_build_is_cached(library):
    assert native.build() == library


@pytest.mark.caffe
@pytest.mark.parametrize("saved_by,loaded_by", [(False, True), (True, False)])
def test_a_caffemodel_loads_into_the_other_implementation(write, library, saved_by, loaded_by):
    count = 3 * 2 ** 22 + 17
    saving = caffe.Net(counter_net(write, saved_by, "a.prototxt"), caffe.TRAIN)
    saving.params["drop"][0].data[...] = (count % 2 ** 22, count // 2 ** 22)
    weights = write("w.caffemodel", "")
    saving.save(weights)
    loading = caffe.Net(counter_net(write, loaded_by, "b.prototxt"), caffe.TRAIN, weights=weights)
    assert float(loading.forward()["p"]) == pytest.approx(count / 2 ** 26)
    low, high = loading.params["drop"][0].data
    assert int(high) * 2 ** 22 + int(low) == count + 1


@pytest.mark.caffe
def test_another_build_of_the_types_stops_with_a_message(tmp_path, library):
    other = str(tmp_path / "libother.so")
    shutil.copy(library, other)
    script = ("import ctypes, caffe\nfrom dropin_caffe import native\nnative.load()\n"
              "ctypes.CDLL(%r, mode=ctypes.RTLD_GLOBAL)\n" % other)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=120)
    assert run.returncode != 0
    assert 'dropin_caffe: layer type "DropIn" is already registered in Caffe by %s' % library in run.stderr


def test_missing_libcaffe_is_reported(monkeypatch, capsys):
    monkeypatch.setenv("DROPIN_CAFFE_LIBCAFFE", "/nonexistent/libcaffe.so")
    with pytest.raises(native.NativeBuildError, match="DROPIN_CAFFE_LIBCAFFE is /nonexistent/libcaffe.so, "
                                                       "which is not a file"):
        native.load()
    assert main(["build"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dropin_caffe.native: ") and err.count("\n") == 1


def test_no_libcaffe_anywhere_says_how_to_get_one(monkeypatch):
    monkeypatch.delenv("DROPIN_CAFFE_LIBCAFFE", raising=False)
    monkeypatch.setattr(native, "_linked_libcaffe", lambda: None)
    monkeypatch.setattr(native.ctypes.util, "find_library", lambda name: None)
    with pytest.raises(native.NativeBuildError, match=r"libcaffe not found: install Caffe .*DROPIN_CAFFE_LIBCAFFE"):
        native.build()


def test_a_cuda_libcaffe_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "libcaffe.so.1.0.0"
    fake.write_bytes(b"\x7fELF...libcudart.so.10.1\0libcublas.so.10\0")
    monkeypatch.setenv("DROPIN_CAFFE_LIBCAFFE", str(fake))
    with pytest.raises(native.NativeBuildError, match="is a CUDA build of Caffe; the native layers are built "
                                                       "CPU_ONLY"):
        native.build()


@pytest.mark.caffe
def test_missing_headers_name_the_package(monkeypatch, tmp_path, library):
    monkeypatch.setenv("DROPIN_CAFFE_HOME", str(tmp_path))  # an empty cache: a build is needed
    monkeypatch.setattr(native, "HEADERS", (("caffe/layer.hpp", "libcaffe-dev (Ubuntu: libcaffe-cpu-dev)"),
                                            ("caffe/not_there.hpp", "libcaffe-dev (Ubuntu: libcaffe-cpu-dev)")))
    with pytest.raises(native.NativeBuildError, match=r"missing header caffe/not_there.hpp .*install libcaffe-dev "
                                                       r"\(Ubuntu: libcaffe-cpu-dev\)"):
        native.build()
    assert not [name for name in os.listdir(str(tmp_path / "native")) if name.endswith(".so")]


@pytest.mark.caffe
def test_cli_path_and_info(library, capsys):
    assert main(["path"]) == 0
    assert capsys.readouterr().out.strip() == library
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "types:    DropIn DropInResize" in out and "built:    yes" in out


@pytest.mark.caffe
def test_select_is_bit_exact_for_nan_and_negative_zero(write, library):
    text = "force_backward: true\n" + input_layer("prev", (4, 100)) + input_layer("new", (4, 100))
    text += python_layer("drop", "DropIn", ["prev", "new"], ["out"], '{"mode": "regularize", "p_new": 0.5}')
    net = caffe.Net(write("n.prototxt", text.replace('type: "Python"', 'type: "DropIn"')), caffe.TRAIN)
    net.blobs["prev"].data[...] = -0.0
    net.blobs["new"].data[...] = np.nan
    out = net.forward()["out"].view(np.uint32)
    assert set(np.unique(out)) <= {np.float32(-0.0).view(np.uint32), np.float32(np.nan).view(np.uint32)}


@pytest.mark.caffe
def test_caffe_random_seed_makes_unseeded_masks_reproducible(write, library):
    text = input_layer("prev", (8, 64)) + input_layer("new", (8, 64))
    text += python_layer("drop", "DropIn", ["prev", "new"], ["out"], '{"mode": "regularize", "p_new": 0.5}')
    path = write("n.prototxt", text.replace('type: "Python"', 'type: "DropIn"'))
    outs = []
    for seed in (11, 11, 12):
        caffe.set_random_seed(seed)
        net = caffe.Net(path, caffe.TRAIN)
        net.blobs["new"].data[...] = 1
        net.blobs["prev"].data[...] = 0
        outs.append(np.concatenate([net.forward()["out"].copy() for _ in range(2)]))
    assert np.array_equal(outs[0], outs[1]) and not np.array_equal(outs[0], outs[2])
    assert not np.array_equal(outs[0][:8], outs[0][8:])  # a fresh mask every pass


def test_caffe_env_preloads_the_library_for_the_caffe_command_only(monkeypatch, tmp_path):
    from dropin_caffe import env
    monkeypatch.setenv("DROPIN_CAFFE_HOME", str(tmp_path))
    assert env._preload_native(["caffe", "train"], {}) is None  # not built: nothing
    (tmp_path / "native").mkdir()
    (tmp_path / "native" / "libdropin_caffe_native.so").write_bytes(b"")
    preload = env._preload_native(["/usr/bin/caffe", "train"], {"LD_PRELOAD": "libother.so"})
    assert preload == str(tmp_path / "native" / "libdropin_caffe_native.so") + ":libother.so"
    assert env._preload_native(["python3", "-m", "pytest"], {}) is None


@pytest.mark.caffe
def test_blobs_past_the_streaming_size_select_and_route_exactly(write, library):
    shape = (100, 32, 32, 33)  # 13.5 MB a blob: written with non-temporal stores; not a multiple of 64 units
    text = "force_backward: true\n" + input_layer("prev", shape) + input_layer("new", shape)
    text += python_layer("drop", "DropIn", ["prev", "new"], ["out"], '{"mode": "regularize", "p_new": 0.3}')
    net = caffe.Net(write("big.prototxt", text.replace('type: "Python"', 'type: "DropIn"')), caffe.TRAIN)
    rng = np.random.default_rng(0)
    net.blobs["prev"].data[...] = rng.standard_normal(shape)
    net.blobs["new"].data[...] = rng.standard_normal(shape)
    out = net.forward()["out"]
    from_new = out == net.blobs["new"].data
    assert np.array_equal(out, np.where(from_new, net.blobs["new"].data, net.blobs["prev"].data))
    assert abs(from_new.mean() - 0.3) < 4 * np.sqrt(0.3 * 0.7 / out.size)
    net.blobs["out"].diff[...] = net.blobs["prev"].data
    net.backward()
    assert np.array_equal(net.blobs["new"].diff, np.where(from_new, net.blobs["prev"].data, 0))
    assert np.array_equal(net.blobs["prev"].diff, np.where(from_new, 0, net.blobs["prev"].data))


@pytest.mark.caffe
def test_the_cache_key_follows_the_sources_and_libcaffe(monkeypatch, tmp_path, library):
    sources = tmp_path / "sources"
    shutil.copytree(native.HERE, str(sources), ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    monkeypatch.setattr(native, "HERE", str(sources))
    assert native.path() == library  # same sources, same libcaffe
    with open(str(sources / "params.cpp"), "a") as handle:
        handle.write("// changed\n")
    changed = native.path()
    assert changed != library
    other = tmp_path / "libcaffe.so.1.0.0"
    other.write_bytes(open(native.libcaffe(), "rb").read() + b"\0")
    monkeypatch.setenv("DROPIN_CAFFE_LIBCAFFE", str(other))
    assert native.path() not in (library, changed)
