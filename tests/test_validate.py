"""Proving nets in Caffe: the DummyData swap, building, and the shape comparison."""
import os
import tempfile

import pytest

from conftest import HAS_CAFFE, input_layer, python_layer
from dropin_caffe.errors import ConfigError
from dropin_caffe.netgen import prototxt, shapes, validate

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe

DATA_NET = '''
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TRAIN }
        transform_param { scale: 0.00390625 } data_param { source: "no/such/lmdb" batch_size: 4 } }
layer { name: "mnist" type: "Data" top: "data" top: "label" include { phase: TEST }
        data_param { source: "no/such/test_lmdb" batch_size: 3 } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 10 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
'''


def test_with_dummy_data_keeps_names_and_tops_and_other_layers():
    net = prototxt.parse(DATA_NET)
    inferred, _ = shapes.infer(net, "TEST", {"data": (1, 28, 28)})
    swapped = validate.with_dummy_data(net, "TEST", inferred)
    data, ip, loss = swapped.get_all("layer")
    assert (data.get("name"), data.get("type"), data.get_all("top")) == ("mnist", "DummyData", ["data", "label"])
    param = data.get("dummy_data_param")
    assert [[shape.get_all("dim")] for shape in param.get_all("shape")] == [[[3, 1, 28, 28]], [[3]]]
    assert [filler.get("type") for filler in param.get_all("data_filler")] == ["gaussian", "constant"]
    assert param.get_all("data_filler")[1].get("value") == 0.0  # labels must be valid classes
    assert (ip, loss) == tuple(net.get_all("layer")[2:])  # untouched
    assert len(net.get_all("layer")) == 4 and net.get_all("layer")[1].get("type") == "Data"  # input not modified


def test_with_dummy_data_keeps_a_data_layer_whose_source_exists(tmp_path):
    source = tmp_path / "list.txt"
    source.write_text("")
    net = prototxt.parse('layer { name: "h5" type: "HDF5Data" top: "x" hdf5_data_param { source: "%s" batch_size: 2 } }'
                         % source)
    assert validate.with_dummy_data(net, "TRAIN", {"x": None}) == net
    net.get("layer").get("hdf5_data_param").set("source", str(tmp_path / "missing.txt"))
    with pytest.raises(ConfigError, match=r"HDF5Data 'h5': its source is not here, so Caffe cannot read the shape "
                                          r"of 'x'; give it with --input-shape x=C,H,W"):
        validate.with_dummy_data(net, "TRAIN", {"x": None})


@pytest.mark.caffe
def test_memory_data_is_always_swapped_and_checks():
    net = prototxt.parse('''
    layer { name: "mem" type: "MemoryData" top: "data" top: "label"
            memory_data_param { batch_size: 2 channels: 1 height: 5 width: 5 } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
    ''')
    assert validate.with_dummy_data(net, "TRAIN", shapes.infer(net)[0]).get("layer").get("type") == "DummyData"
    assert validate.check_net(net, "TRAIN") == {"data": (2, 1, 5, 5), "label": (2,), "ip": (2, 3), "loss": ()}


@pytest.mark.caffe
def test_check_net_in_both_phases_with_batch_override():
    net = prototxt.parse(DATA_NET)
    assert validate.check_net(net, "TRAIN", {"data": (1, 28, 28)})["ip"] == (4, 10)
    assert validate.check_net(net, "TEST", {"data": (5, 1, 28, 28)})["label"] == (5,)


def test_check_net_needs_unknown_data_shapes():
    with pytest.raises(ConfigError, match="Data 'mnist': its source is not here, so Caffe cannot read the shape of "
                                          "'data'; give it with --input-shape data=C,H,W"):
        validate.check_net(prototxt.parse(DATA_NET), "TRAIN")


@pytest.mark.caffe
def test_check_net_names_the_blob_whose_declared_shape_differs():
    net = prototxt.parse(input_layer("data", (1, 3, 8, 8)) +
                         'layer { name: "relu" type: "ReLU" bottom: "data" top: "out" }')
    with pytest.raises(ConfigError, match=r"blob 'data' \(top of Input 'data'\): shape inference gives \(2, 3, 8, 8\), "
                                          r"Caffe \(1, 3, 8, 8\) in phase TRAIN; check the shapes given with "
                                          r"--input-shape"):
        validate.check_net(net, "TRAIN", {"data": (2, 3, 8, 8)})
    assert validate.check_net(net, "TRAIN", {"data": (1, 3, 8, 8)}) == {"data": (1, 3, 8, 8), "out": (1, 3, 8, 8)}


@pytest.mark.caffe
def test_check_net_reports_unknown_shapes_from_caffe():
    net = prototxt.parse(input_layer("data", (2, 3, 4, 4)) +
                         'layer { name: "am" type: "ArgMax" bottom: "data" top: "am" argmax_param { axis: 1 } }\n'
                         'layer { name: "relu" type: "ReLU" bottom: "am" top: "r" }')
    inferred, _ = shapes.infer(net)
    assert inferred["am"] is None and inferred["r"] is None
    assert validate.check_net(net, "TRAIN")["r"] == (2, 1, 4, 4)  # what Caffe made of it


@pytest.mark.caffe
def test_check_net_with_our_python_layers():
    net = prototxt.parse(input_layer("a", (2, 3, 6, 6)) + input_layer("b", (2, 4, 3, 3)) +
                         python_layer("fit", "Resize", ["a"], ["fit"], '{"channels": 4, "height": 3, "width": 3}',
                                      counter=False) +
                         python_layer("join", "DropIn", ["fit", "b"], ["join", "p"], '{"length": 5}'))
    assert validate.check_net(net, "TRAIN")["join"] == (2, 4, 3, 3)
    assert validate.check_net(net, "TEST")["p"] == (1,)


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """load_net's temp prototxt goes here, so tests can see that nothing is left behind."""
    folder = tmp_path / "temp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.caffe
@pytest.mark.parametrize("layer, message", [
    ('layer { name: "x" type: "MyForkLayer" bottom: "data" top: "x" }',
     "layer 'x': this Caffe has no layer type 'MyForkLayer'; its types: AbsVal, Accuracy"),
    ('layer { name: "x" type: "ReLU" bottom: "data" top: "x" relu_param { fork_option: 2 } }',
     'caffe_pb2 rejects the text as a NetParameter: .*fork_option'),
    ('layer { name: "x" type: "Python" bottom: "data" top: "x" python_param { module: "no_such_module" layer: "L" } }',
     "Python layer 'x': cannot import module 'no_such_module' .No module named 'no_such_module'.; "
     "put it on PYTHONPATH"),
    ('layer { name: "x" type: "Python" bottom: "data" top: "x" python_param { module: "dropin_caffe.layers" '
     'layer: "Missing" } }',
     "Python layer 'x': module 'dropin_caffe.layers' has no layer class 'Missing'"),
    (python_layer("x", "Resize", ["data"], ["x"], '{"colour": 3}', counter=False),
     'Caffe could not build the net in phase TRAIN: .*unknown key "colour"'),
])
def test_load_net_turns_what_caffe_rejects_into_config_errors(layer, message, temp_dir):
    net = prototxt.parse(input_layer("data", (2, 3, 4, 4)) + layer)
    with pytest.raises(ConfigError, match=message):
        validate.load_net(net, "TRAIN")
    assert os.listdir(str(temp_dir)) == []


@pytest.mark.caffe
def test_load_net_builds_the_phase_and_leaves_no_file(temp_dir):
    net = prototxt.parse('''
    layer { name: "data" type: "DummyData" top: "data" include { phase: TRAIN }
            dummy_data_param { shape { dim: 4 dim: 5 } } }
    layer { name: "data" type: "DummyData" top: "data" include { phase: TEST }
            dummy_data_param { shape { dim: 3 dim: 5 } } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
    ''')
    train, test = validate.load_net(net, "TRAIN"), validate.load_net(net, "test")
    assert validate.caffe_shapes(train) == {"data": (4, 5), "ip": (4, 2)}
    assert validate.caffe_shapes(test) == {"data": (3, 5), "ip": (3, 2)}
    assert os.listdir(str(temp_dir)) == []
    with pytest.raises(ConfigError, match="phase must be TRAIN or TEST, got 'VAL'"):
        validate.load_net(net, "val")


@pytest.mark.caffe
def test_caffe_shapes_lists_every_blob_with_caffes_splits():
    net = prototxt.parse(input_layer("data", (2, 3)) +
                         'layer { name: "a" type: "ReLU" bottom: "data" top: "a" }\n'
                         'layer { name: "b" type: "TanH" bottom: "data" top: "b" }\n'
                         'layer { name: "l" type: "EuclideanLoss" bottom: "a" bottom: "b" top: "l" }')
    got = validate.caffe_shapes(validate.load_net(net, "TRAIN"))
    assert got["l"] == () and got["a"] == (2, 3)
    assert {name for name in got if "_split_" in name} == {"data_data_0_split_0", "data_data_0_split_1"}
    assert isinstance(validate.load_net(net, "TEST"), caffe.Net)


# A segmentation-style net fed by a Python data layer (its module is not on this machine) and a fork's
# data layer: given their shapes, the rest of the net is still built in Caffe.
FORK_FED = '''
layer { name: "py" type: "Python" top: "data" top: "label"
  python_param { module: "no_such_seg_module" layer: "SegData" param_str: "{'batch_size': 2}" } }
layer { name: "pair" type: "MyForkPairData" top: "pair" }
layer { name: "conv" type: "Convolution" bottom: "data" top: "conv" convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "conv_pair" type: "Convolution" bottom: "pair" top: "conv_pair"
  convolution_param { num_output: 3 kernel_size: 1 } }
layer { name: "sum" type: "Eltwise" bottom: "conv" bottom: "conv_pair" top: "sum" }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "sum" bottom: "label" top: "loss" }
'''


@pytest.mark.caffe
def test_python_and_fork_data_layers_are_replaced_for_validation():
    """Issue 8.8: every data-producing layer whose shapes are known becomes DummyData, so Caffe still
    builds the net; only unknown compute layers skip the build."""
    net = prototxt.parse(FORK_FED)
    given = {"data": (4, 6, 6), "label": (1, 6, 6), "pair": (2, 4, 6, 6)}
    found = {phase: shapes.infer(net, phase, given)[0] for phase in ("TRAIN", "TEST")}
    swapped = validate.with_dummy_data(net, "TRAIN", found["TRAIN"])
    assert [one.get("type") for one in swapped.get_all("layer")][:2] == ["DummyData", "DummyData"]
    assert validate.prove(net, net, None, found) == []  # built in Caffe in both phases
    unknown = {phase: shapes.infer(net, phase, {"pair": (2, 4, 6, 6)})[0] for phase in ("TRAIN", "TEST")}
    # No rewrite needed those shapes: validation falls back to shape inference, with a note (issue 24).
    assert validate.prove(net, net, None, unknown) == [
        "Caffe cannot build the net here (Python 'py': its module 'no_such_seg_module' is not importable here, so "
        "Caffe cannot make 'data', 'label'; give it with --input-shape data=C,H,W (or N,C,H,W)): the emitted files "
        "were checked by caffe_pb2 and shape inference only"]
    compute = prototxt.parse(FORK_FED.replace('type: "Eltwise"', 'type: "MyForkEltwise"'))
    assert validate.prove(compute, compute, None, found) == [
        "this Caffe has no layer type MyForkEltwise (a fork's?): the emitted net was checked by caffe_pb2 and "
        "shape inference, not built"]
