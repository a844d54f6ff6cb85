"""expand_net --weights: a trained model patched deeper starts as the trained net, proven in Caffe (issue 24)."""
import io
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import HAS_CAFFE, TINY_LAYERS
from dropin_caffe.cli import run_experiments
from dropin_caffe.cli.expand_net import main as expand_main
from dropin_caffe.errors import CaffeEnvError, ConfigError
from dropin_caffe.netgen import export, identity, start
from dropin_caffe.netgen.expand import expand_net

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests
    import caffe

pytestmark = pytest.mark.caffe  # every test here patches a model trained in Caffe

TRAIN = {"name": "trained", "dataset": "mnist", "train_count": 200, "test_count": 100, "iterations": 30,
         "test_interval": 30, "seeds": [1], "configurations": {"LeNet": ["--template", "lenet", "--set",
                                                                          "train_batch_size=16"]}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(net, solver, caffemodel) of LeNet trained 30 iterations on the real MNIST (about 4 s)."""
    root = tmp_path_factory.mktemp("trained")
    path = root / "trained.json"
    path.write_text(json.dumps(TRAIN))
    assert run_experiments.main([str(path), "-o", str(root / "out"), "--data-dir", str(root / "data")],
                                out=io.StringIO(), err=io.StringIO()) == 0
    run = root / "out" / "LeNet" / "seed1"
    return str(run / "net.prototxt"), str(run / "solver.prototxt"), str(run / "snapshot_iter_30.caffemodel")


def differences(notes):
    """{comparison: (promised, largest relative difference)} from the proof's notes."""
    found = {}
    for note in notes:
        match = re.match(r"--weights: the start (at p = \d|without DropIn).* (is the trained net|is not promised).*"
                         r"largest difference (\S+) of the output's scale", note)
        if match:
            found[match.group(1)] = (match.group(2) == "is the trained net", float(match.group(3)))
    return found


def test_fresh_replicas_keep_the_trained_layers_and_start_as_the_trained_net(trained):
    net, _, weights = trained
    expansion = expand_net(net, replicate={"ip1": 2}, dropin_length=10, weights=weights)
    stored, init = export.read_weights(weights), expansion.initial_weights
    assert sorted(init) == ["conv1", "conv2", "ip1", "ip1_1", "ip1_1_dropin", "ip1_2", "ip1_2_dropin", "ip2"]
    for name, arrays in stored.items():  # the trained blobs, unchanged
        assert all(np.array_equal(a, b) for a, b in zip(init[name][1], arrays)) and len(init[name][1]) == len(arrays)
    weight, bias = init["ip1_1"][1]  # drawn once by Caffe from the replica's xavier filler
    assert weight.shape == (500, 500) and 0 < np.abs(weight).max() <= np.sqrt(3 / 500) + 1e-6 and not bias.any()
    assert not init["ip1_1_dropin"][1][0].any()  # the DropIn counters at 0
    found = differences(expansion.notes)
    print("fresh replicas, LeNet ip1=2:", found)
    assert found["at p = 0"][0] and found["at p = 0"][1] <= 1e-5
    assert not found["at p = 1"][0] and found["at p = 1"][1] > 1e-3  # fresh replicas change the output


@pytest.mark.parametrize("replicate, dropin", [({"ip1": 2}, True), ({"ip1": 1, "conv2": 1}, False)])
def test_identity_replicas_after_a_relu_start_as_the_trained_net_at_p_0_and_p_1(trained, replicate, dropin):
    net, _, weights = trained
    expansion = expand_net(net, replicate=replicate, dropin_length=10, dropin=dropin, replica_init="identity",
                           weights=weights)
    init = expansion.initial_weights
    assert np.array_equal(init["ip1_1"][1][0], np.eye(500, dtype=np.float32))
    assert np.array_equal(init["ip1"][1][0], export.read_weights(weights)["ip1"][0])
    found = differences(expansion.notes)
    print("identity replicas, LeNet %s:" % replicate, found)
    assert found and all(promised and difference <= 1e-5 for promised, difference in found.values())
    assert set(found) == ({"at p = 0", "at p = 1"} if dropin else {"without DropIn"})


def test_an_identity_replica_that_adds_a_relu_is_not_promised(trained):
    """conv2 has no ReLU: with --add-activation relu its identity replica computes relu(conv2) != conv2."""
    net, _, weights = trained
    expansion = expand_net(net, replicate={"conv2": 1}, dropin_length=10, replica_init="identity",
                           add_activation="relu", weights=weights)
    found = differences(expansion.notes)
    assert found["at p = 0"][0] and found["at p = 0"][1] <= 1e-5
    assert not found["at p = 1"][0]
    assert any("identity replica 'conv2_1' reads a blob its followers change" in note for note in expansion.notes)


def test_a_start_that_differs_where_equality_is_promised_is_an_error(trained):
    """The proof itself: an init whose ip2 is not the trained one fails the p = 0 comparison."""
    net, _, weights = trained
    expansion = expand_net(net, replicate={"ip1": 1}, dropin_length=10, weights=weights)
    original = export.reader.read_net(net)
    wrong = dict(expansion.initial_weights, ip2=("InnerProduct", [a * 2 for a in expansion.initial_weights["ip2"][1]]))
    checks = [("at p = 0 (every DropIn outputs prev)", "prev", None)]
    with pytest.raises(ConfigError) as info:
        start.prove(original, expansion.net, export.read_weights(weights), wrong, expansion.shapes, checks)
    assert re.match(r"--weights: the expanded net at p = 0 \(every DropIn outputs prev\) must output what the trained "
                    r"net does, but '\w+' differs by \S+ of its scale \(above 1e-05\); please report this net$",
                    str(info.value)), str(info.value)
    assert start.prove(original, expansion.net, export.read_weights(weights), wrong, expansion.shapes,
                       [("at p = 0", "prev", "a reason")])[0].startswith(
        "--weights: the start at p = 0 is not promised to be the trained net (a reason): largest difference ")


DROPOUT_NET = TINY_LAYERS.replace('layer { name: "new"', '''
layer { name: "relu" type: "ReLU" bottom: "prev" top: "prev" }
layer { name: "drop" type: "Dropout" bottom: "prev" top: "prev" dropout_param { dropout_ratio: 0.5 } }
layer { name: "new"''') + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "new" bottom: "label" top: "loss" }\n'


@pytest.mark.parametrize("keywords, labels", [
    ({"regularize": {"drop": 0.5}}, {"at p = 0": False, "at p = 1": True}),
    ({"replicate": {"new": 1}, "dropin": False}, {"without DropIn": False}),
])
def test_where_equality_is_not_promised_a_note_gives_the_difference(write, tmp_path, keywords, labels):
    net = write("dropout.prototxt", DROPOUT_NET)
    model = str(tmp_path / "dropout.caffemodel")
    caffe.Net(net, caffe.TEST).save(model)  # its weights as Caffe's fillers drew them
    expansion = expand_net(net, dropin_length=10, weights=model, **keywords)
    found = differences(expansion.notes)
    assert {label: promised for label, (promised, _) in found.items()} == labels
    reason = ("--regularize replaces a Dropout" if "regularize" in keywords
              else "fresh replicas drawn from their fillers")
    assert all(reason in note for note in expansion.notes if "is not promised" in note)


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    code = expand_main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def another_nets(tmp_path):
    """A .caffemodel of the tiny DummyData net of conftest (layers prev and new)."""
    path = tmp_path / "tiny.prototxt"
    path.write_text(TINY_LAYERS)
    model = str(tmp_path / "tiny.caffemodel")
    caffe.Net(str(path), caffe.TEST).save(model)
    return model


def test_another_nets_caffemodel_is_refused_in_one_line_nothing_written(trained, another_nets, tmp_path):
    net, _, _ = trained
    out_dir = str(tmp_path / "out")
    code, out, err = run_cli([net, "--replicate", "ip1=1", "--dropin-length", "10", "--weights", another_nets,
                              "-o", out_dir])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
    assert err.startswith("expand_net.py: --weights %s has no layer of LeNet: is it another net's? it holds prev, new"
                          % another_nets), err
    assert not os.path.exists(out_dir)


def test_a_common_layer_of_another_shape_is_refused_naming_both_shapes(trained, tmp_path):
    net, _, _ = trained
    model = str(tmp_path / "narrow.caffemodel")
    with open(model, "wb") as f:
        f.write(identity.caffemodel({"ip1": ("InnerProduct", [np.zeros((400, 800), np.float32),
                                                              np.zeros(400, np.float32)])}))
    out_dir = str(tmp_path / "out")
    code, out, err = run_cli([net, "--replicate", "ip1=1", "--dropin-length", "10", "--weights", model, "-o", out_dir])
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert ("--weights %s does not fit layer 'ip1': it holds blobs of shapes [400x800, 400], the net's are "
            "[500x800, 500]" % model) in err, err
    assert not os.path.exists(out_dir)


def test_layers_missing_from_the_caffemodel_are_named_and_start_from_their_fillers(trained, tmp_path):
    net, _, weights = trained
    stored = export.read_weights(weights)
    model = str(tmp_path / "partial.caffemodel")
    with open(model, "wb") as f:
        f.write(identity.caffemodel({name: ("X", stored[name]) for name in ("conv1", "conv2")}))
    expansion = expand_net(net, replicate={"ip1": 1}, dropin_length=10, weights=model)
    assert "--weights %s has no blobs for ip1, ip2: they start from their fillers" % model in expansion.notes
    assert differences(expansion.notes)["at p = 0"][1] <= 1e-5  # the same draws in both nets


def test_an_old_caffemodel_with_4d_blob_shapes_fits(trained, tmp_path):
    """Old zoo caffemodels store (num, channels, height, width); Caffe loads them by size, and so does --weights."""
    from caffe.proto import caffe_pb2
    net, _, weights = trained
    model = caffe_pb2.NetParameter()
    for name, arrays in export.read_weights(weights).items():
        layer = model.layers.add(name=name)  # V1 layers, legacy blob dims
        for array in arrays:
            dims = (1,) * (4 - array.ndim) + array.shape
            layer.blobs.add(num=dims[0], channels=dims[1], height=dims[2], width=dims[3], data=array.ravel().tolist())
    path = tmp_path / "old.caffemodel"
    path.write_bytes(model.SerializeToString())
    expansion = expand_net(net, replicate={"ip1": 1}, dropin_length=10, weights=str(path))
    assert expansion.initial_weights["ip1"][1][0].shape == (500, 800)
    assert np.array_equal(expansion.initial_weights["ip2"][1][1], export.read_weights(weights)["ip2"][1])
    assert differences(expansion.notes)["at p = 0"][1] <= 1e-5


@pytest.mark.parametrize("keywords, message", [
    ({"weights": "no/such.caffemodel"}, "--weights must be an existing file, got 'no/such.caffemodel'; give the path"),
])
def test_bad_weights_options_are_refused_before_anything_is_read(trained, keywords, message):
    net, _, weights = trained
    keywords = dict({"weights": weights, "dropin_length": 10}, **keywords)
    with pytest.raises(ConfigError) as info:
        expand_net(net, **keywords)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_without_caffe_weights_is_one_line(trained, monkeypatch, tmp_path):
    net, _, weights = trained
    for module in ("caffe", "caffe.proto", "caffe.proto.caffe_pb2"):  # as on a host where `import caffe` fails
        monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(CaffeEnvError, match=r"^--weights \(reading a .caffemodel\) needs Caffe, which .* cannot "
                                            r"import .*; run it with the embedded Caffe: "):
        expand_net(net, replicate={"ip1": 1}, dropin_length=10, weights=weights, validate=False)
    out_dir = str(tmp_path / "out")
    code, out, err = run_cli([net, "--replicate", "ip1=1", "--dropin-length", "10", "--weights", weights,
                              "-o", out_dir])
    assert code == 2 and out == "" and err.startswith("expand_net.py: --weights (reading a .caffemodel) needs Caffe")
    assert len(err.strip().splitlines()) == 1 and not os.path.exists(out_dir)


def test_the_cli_prints_caffe_train_with_the_init_and_caffe_trains_from_it(trained, tmp_path):
    net, solver, weights = trained
    out_dir = str(tmp_path / "out")
    code, out, err = run_cli([net, "--replicate", "ip1=1", "--dropin-length", "10", "--solver", solver, "--max-iter",
                              "2", "--weights", weights, "-q", "-o", out_dir])
    assert code == 0, err
    init = os.path.join(out_dir, "net_dropin_init.caffemodel")
    command = "caffe train --solver=%s --weights=%s" % (os.path.join(out_dir, "solver_dropin.prototxt"), init)
    line = next(line for line in out.splitlines() if line.startswith("train with: "))
    assert line.endswith(command) and "TRAINED" not in line
    assert "note: --weights: the start at p = 0 (every DropIn outputs prev) is the trained net" in err
    run = subprocess.run(command.split(), cwd=str(tmp_path), capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, GLOG_minloglevel="0"))
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Finetuning from %s" % init in run.stderr and "Optimization Done." in run.stderr


ROI_NET = '''name: "roi"
layer { name: "input-data" type: "Python" top: "data" top: "im_info" top: "gt_boxes"
  python_param { module: "roi_data_layer.layer" layer: "RoIDataLayer" param_str: "'num_classes': 21" } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 2 } }
layer { name: "conv2" type: "Convolution" bottom: "pool1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "boxes" type: "InnerProduct" bottom: "gt_boxes" top: "boxes" inner_product_param { num_output: 4 } }
layer { name: "silence" type: "Silence" bottom: "im_info" bottom: "boxes" bottom: "conv2" }
'''


def test_a_python_data_layer_whose_module_is_missing_expands_with_a_note(write, tmp_path):
    """Issue 24 D: no rewrite needs the shapes of 'data', 'im_info', 'gt_boxes', so validation falls back to
    shape inference with a note; a rewrite that needs one names the blob."""
    net = write("roi.prototxt", ROI_NET)
    out_dir = str(tmp_path / "out")
    code, out, err = run_cli([net, "--replicate", "conv2=2", "--dropin-length", "10", "-q", "-o", out_dir])
    assert code == 0, err
    assert ("note: Caffe cannot build the net here (Python 'input-data': its module 'roi_data_layer.layer' is not "
            "importable here, so Caffe cannot make 'data', 'im_info', 'gt_boxes'; give it with --input-shape") in err
    expanded = export.reader.read_net(os.path.join(out_dir, "roi_dropin.prototxt"))
    layers = {str(layer.get("name")): layer for layer in expanded.get_all("layer")}
    for name, bottom in (("conv2_1", "conv2"), ("conv2_2", "conv2_1_dropin")):
        assert str(layers[name].get("bottom")) == bottom
        assert int(layers[name].get("convolution_param").get("num_output")) == 8
        assert str(layers[name + "_relu"].get("type")) == "ReLU"
    assert [str(b) for b in layers["silence"].get_all("bottom")] == ["im_info", "boxes", "conv2_2_dropin"]
    # A pooling replica needs its input's shape: the error names the blob and where its shape starts.
    with pytest.raises(ConfigError, match=r"^--replicate pool1: .*the shape of blob 'conv1' is unknown .*"
                                          r"--input-shape data=C,H,W"):
        expand_net(net, replicate={"pool1": 1}, dropin_length=10)
    with pytest.raises(ConfigError, match=r"^--replica-init identity: replica 'conv2_1': the shape of blob 'conv2' "
                                          r"is unknown .*--input-shape data=C,H,W"):
        expand_net(net, replicate={"conv2": 1}, dropin_length=10, replica_init="identity")
    fork = write("fork.prototxt", ROI_NET.replace('type: "Python"', 'type: "MyForkRoIData"'))
    notes = expand_net(fork, replicate={"conv2": 1}, dropin_length=10).notes
    assert "this Caffe has no layer type MyForkRoIData (a fork's?): the emitted net was checked by caffe_pb2 and " \
           "shape inference, not built" in notes
    given = expand_net(net, replicate={"conv2": 1}, dropin_length=10, replica_init="identity",
                       input_shape={"data": (2, 3, 16, 16)})
    assert np.array_equal(given.initial_weights["conv2_1"][1][0][:, :, 1, 1], np.eye(8, dtype=np.float32))


def test_a_python_data_layer_whose_module_is_missing_takes_trained_weights_unproven(write, tmp_path):
    """--weights on that net: the init holds the trained layers, the replicas are left to caffe train's
    fillers, and notes say that Caffe could not build the net nor prove the start."""
    net = write("roi.prototxt", ROI_NET)
    stand_in = write("roi_input.prototxt", ROI_NET.replace(
        'type: "Python" top: "data" top: "im_info" top: "gt_boxes"',
        'type: "Input" top: "data" top: "im_info" top: "gt_boxes" input_param { shape { dim: 1 dim: 3 dim: 16 '
        'dim: 16 } shape { dim: 1 dim: 3 } shape { dim: 1 dim: 5 } }'))
    model = str(tmp_path / "roi.caffemodel")
    caffe.Net(stand_in, caffe.TEST).save(model)
    expansion = expand_net(net, replicate={"conv2": 1}, dropin_length=10, weights=model)
    stored = export.read_weights(model)
    assert sorted(expansion.initial_weights) == ["boxes", "conv1", "conv2"]
    assert all(np.array_equal(a, b) for a, b in zip(expansion.initial_weights["conv2"][1], stored["conv2"]))
    assert any(note.startswith("--weights: Caffe cannot build the expanded net here (Python 'input-data': its module "
                               "'roi_data_layer.layer' is not importable here") for note in expansion.notes)
    assert ("--weights: the start was not proven in Caffe: the shape of 'data' is unknown (give --input-shape "
            "data=C,H,W to prove it)") in expansion.notes
    given = expand_net(net, replicate={"conv2": 1}, dropin_length=10, weights=model,
                       input_shape={"data": (1, 3, 16, 16), "im_info": (1, 3, 1, 1), "gt_boxes": (1, 5, 1, 1)})
    assert sorted(given.initial_weights) == ["boxes", "conv1", "conv2", "conv2_1", "conv2_1_dropin"]
    found = differences(given.notes)
    print("fresh replica, RoI net conv2=1:", found)
    assert found["at p = 0"][0] and found["at p = 0"][1] <= 1e-5


def test_a_configuration_with_weights_starts_from_the_trained_model(trained, tmp_path, capsys):
    """run_experiments: --weights in an unchained configuration's arguments makes its init the whole
    start: Caffe loads it, and the test at iteration 0 is the trained net's own last test."""
    net, solver, weights = trained
    arguments = [net, "--solver", solver, "--replicate", "ip1=1", "--dropin-length", "10", "--weights", weights]
    experiment = dict(TRAIN, name="patched", iterations=10, test_interval=10,
                      configurations={"patched": arguments})
    path = tmp_path / "patched.json"
    path.write_text(json.dumps(experiment))
    out_dir = tmp_path / "out"
    assert run_experiments.main([str(path), "-o", str(out_dir), "--data-dir", str(tmp_path / "data")]) == 0, \
        capsys.readouterr()[1]
    run_dir = out_dir / "patched" / "seed1"
    log = (run_dir / "caffe.log").read_text()
    assert "Finetuning from %s" % (run_dir / "init.caffemodel") in log
    before = re.findall(r"Test net output #\d+: accuracy = (\S+)", open(os.path.join(os.path.dirname(weights),
                                                                                   "caffe.log")).read())
    after = re.findall(r"Test net output #\d+: accuracy = (\S+)", log)
    assert after[0] == before[-1]  # iteration 0 of the patched net is the trained net

    chained = dict(experiment, configurations={"first": [net, "--solver", solver, "--replicate", "ip1=1",
                                                         "--no-dropin"],
                                               "patched": {"arguments": arguments, "after": "first"}})
    path.write_text(json.dumps(chained))
    capsys.readouterr()
    assert run_experiments.main([str(path), "-o", str(tmp_path / "out2")]) == 2
    err = capsys.readouterr()[1]
    assert 'configuration "patched": "after" and --weights both give its start' in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "out2").exists()


def test_the_exported_start_is_the_trained_model(trained, tmp_path):
    """export_net of the start (the init, iteration 0): DropIn at p = 0 is removed, the replica goes
    with it, and what is left is the trained LeNet's layers with the trained blobs, so its function."""
    net, solver, weights = trained
    expansion = expand_net(net, replicate={"ip1": 1}, dropin_length=10, weights=weights, solver=solver)
    expansion.write(str(tmp_path))
    exported = export.export_net(str(tmp_path / expansion.net_name), str(tmp_path / expansion.weights_name))
    assert any("p = 0 (counter 0): removed, its consumers read 'ip1' (prev)" in line for line in exported.lines)
    kept = [str(layer.get("name")) for layer in exported.net.get_all("layer")]
    assert "ip1_1" not in kept and {"conv1", "conv2", "ip1", "ip2"} <= set(kept)
    trained_blobs = export.read_weights(weights)
    for name, arrays in exported.weights.items():
        assert all(np.array_equal(a, b) for a, b in zip(arrays, trained_blobs[name])), name
    assert exported.proof and max(relative for _, _, relative in exported.proof) <= 1e-5


def test_the_exported_start_of_a_widening_is_the_trained_function(trained, tmp_path):
    """A widened start exported at iteration 0: the export is proven equal to the start, and the
    start to the trained net, so the export computes the trained model's function."""
    net, solver, weights = trained
    expansion = expand_net(net, widen={"conv1": 30}, dropin_length=10, weights=weights, solver=solver)
    assert max(difference for _, difference in differences(expansion.notes).values()) <= 1e-5
    expansion.write(str(tmp_path))
    exported = export.export_net(str(tmp_path / expansion.net_name), str(tmp_path / expansion.weights_name))
    assert exported.proof and max(relative for _, _, relative in exported.proof) <= 1e-5
