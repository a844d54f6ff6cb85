"""Shape inference against caffe.Net: every caffe-doc net, and hand-computed layer cases."""
import glob
import os

import pytest

from conftest import ODD_HEAD, ODD_NETS, input_layer, python_layer
from dropin_caffe.errors import ConfigError
from dropin_caffe.netgen import prototxt, shapes, validate

DOC = "/usr/share/doc/caffe-doc"
NETS = sorted(path for pattern in ("*.prototxt", "*.prototxt.gz") for path in glob.glob(DOC + "/*/*/" + pattern)
              if "solver" not in os.path.basename(path))

# Per-sample shapes of the datasets the stock nets read (facts of the datasets, keyed by where
# the source path points); ImageNet is cropped to the layer's crop_size.
DATASETS = [
    ("examples/siamese/", lambda crop: {"data": (2, 28, 28), "label": ()}),  # image pairs on the channel axis
    ("examples/mnist/", lambda crop: {"data": (1, 28, 28), "label": ()}),
    ("examples/cifar10/", lambda crop: {"data": (3, 32, 32), "label": ()}),
    ("ilsvrc12", lambda crop: {"data": (3, crop, crop), "label": ()}),
    ("examples/hdf5_classification/", lambda crop: {"data": (4,), "label": ()}),  # 4 features per sample
]
BIG = 2 * 28 * 28  # larger samples than MNIST's (pairs) run at batch 2, to keep the test fast
STAGES = {("mnist_autoencoder.prototxt", "TEST"): ("test-on-test",)}
# Blobs inference cannot know: linreg's loss comes from the example's own Python layer.
UNKNOWN = {"linreg.prototxt": {"loss"}}


def dataset_shapes(net, phase, stages):
    """input_shapes for every data layer that reads a source: (batch,) + per-sample shape."""
    given = {}
    for layer in shapes.phase_net(net, phase, stages).get_all("layer"):
        kind = str(layer.get("type"))
        if kind not in shapes.SOURCE_PARAMS:
            continue
        param = layer.get(shapes.SOURCE_PARAMS[kind])
        crop = (layer.get("transform_param") or prototxt.Message()).get("crop_size")
        tops = layer.get_all("top")
        if kind in ("Data", "HDF5Data"):
            sample = next(make(crop) for where, make in DATASETS if where in param.get("source"))
        else:  # ImageData, WindowData: color crops
            sample = {"data": (3, crop, crop)}
        count = 1
        for dim in sample["data"]:
            count *= dim
        batch = 2 if count > BIG else param.get("batch_size")
        given[tops[0]] = (batch,) + sample["data"]
        if kind == "HDF5Data":
            given[tops[1]] = (batch,) + sample["label"]
    return given


@pytest.mark.caffe
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
@pytest.mark.parametrize("path", NETS, ids=lambda path: os.path.relpath(path, DOC))
def test_caffe_doc_net_shapes_equal_caffes(path, phase, monkeypatch):
    monkeypatch.syspath_prepend(DOC + "/examples/pycaffe/layers")  # linreg's Python loss layer
    net = prototxt.read(path)
    stages = STAGES.get((os.path.basename(path), phase), ())
    given = dataset_shapes(net, phase, stages)
    inferred, _ = shapes.infer(net, phase, given, stages)
    caffe_shapes = validate.check_net(net, phase, given, stages)
    unknown = {blob for blob, shape in inferred.items() if shape is None}
    assert unknown == UNKNOWN.get(os.path.basename(path), set())
    assert set(caffe_shapes) == set(inferred)
    for blob, shape in inferred.items():
        assert shape is None or caffe_shapes[blob] == shape, blob


@pytest.mark.caffe
def test_caffe_doc_nets_all_current_format():
    # None of them is V1 (so none needs the upgrade); the V1 path is tested with upgrade_net.
    assert len(NETS) == 29
    assert not [path for path in NETS if prototxt.read(path).get_all("layers")]


@pytest.mark.caffe
def test_autoencoder_test_phase_needs_its_stage():
    net = prototxt.read(DOC + "/examples/mnist/mnist_autoencoder.prototxt")
    with pytest.raises(ConfigError, match="Flatten 'flatdata': bottom 'data' is not the top of an earlier layer "
                                          "in phase TEST"):
        shapes.infer(net, "TEST")


@pytest.mark.caffe
@pytest.mark.parametrize("path, batch_sizes", [
    ("models/bvlc_alexnet/deploy.prototxt", None),
    ("models/bvlc_googlenet/deploy.prototxt.gz", None),
    ("examples/cifar10/cifar10_full_sigmoid_train_test_bn.prototxt", {"data": (2, 3, 32, 32)}),
    ("examples/siamese/mnist_siamese_train_test.prototxt", {"pair_data": (2, 2, 28, 28)}),
])
def test_param_counts_equal_caffes(path, batch_sizes):
    net = prototxt.read(os.path.join(DOC, path))
    inferred, layers = shapes.infer(net, "TRAIN", batch_sizes)
    caffe_net = validate.load_net(validate.with_dummy_data(net, "TRAIN", inferred), "TRAIN")
    counted = {name: sum(blob.count for blob in blobs) for name, blobs in caffe_net.params.items()}
    assert {layer.name: layer.params for layer in layers if layer.params} == counted


@pytest.mark.caffe
def test_alexnet_parameter_total():
    # 60,965,224: the AlexNet size everybody quotes (conv2, 4, 5 in two groups).
    _, layers = shapes.infer(prototxt.read(DOC + "/models/bvlc_alexnet/deploy.prototxt"))
    assert sum(layer.params for layer in layers) == 60965224


# ---------------------------------------------------------------------------------------------
# Hand-computed cases; each net is also built in Caffe, which must agree.

def infer_text(text, input_shapes=None, phase="TRAIN"):
    net = prototxt.parse(text)
    inferred, layers = shapes.infer(net, phase, input_shapes)
    return net, inferred, {layer.name: layer for layer in layers}


def agree_with_caffe(net, input_shapes=None):
    inferred, _ = shapes.infer(net, "TRAIN", input_shapes)
    got = validate.check_net(net, "TRAIN", input_shapes)
    assert {blob: got[blob] for blob, shape in inferred.items() if shape is not None} == \
        {blob: shape for blob, shape in inferred.items() if shape is not None}


def pool(name, bottom, params):
    return 'layer { name: "%s" type: "Pooling" bottom: "%s" top: "%s" pooling_param { %s } }\n' % (
        name, bottom, name, params)


@pytest.mark.caffe
def test_pooling_rounds_up_and_drops_a_window_starting_in_the_padding():
    text = input_layer("data", (2, 3, 7, 5)) + input_layer("odd", (1, 1, 5, 5))
    text += pool("ceil", "data", "pool: MAX kernel_size: 2 stride: 2")          # ceil(5/2)+1 = 4, ceil(3/2)+1 = 3
    text += pool("floor", "data", "pool: MAX kernel_size: 2 stride: 2 round_mode: FLOOR")  # 3, 2
    text += pool("padded", "data", "pool: AVE kernel_size: 3 stride: 2 pad: 1")  # ceil(6/2)+1 = 4, 3
    # ceil(5/2)+1 = 4 windows, but the 4th would start at 6 >= 5 + 1, in the padding: 3
    text += pool("clipped", "odd", "pool: MAX kernel_size: 2 stride: 2 pad: 1")
    text += pool("global", "data", "pool: AVE global_pooling: true")
    text += pool("rect", "data", "pool: MAX kernel_h: 3 kernel_w: 1 stride_h: 2 stride_w: 1")  # 3, 5
    net, inferred, _ = infer_text(text)
    assert inferred["ceil"] == (2, 3, 4, 3)
    assert inferred["floor"] == (2, 3, 3, 2)
    assert inferred["padded"] == (2, 3, 4, 3)
    assert inferred["clipped"] == (1, 1, 3, 3)
    assert inferred["global"] == (2, 3, 1, 1)
    assert inferred["rect"] == (2, 3, 3, 5)
    agree_with_caffe(net)


def conv(name, bottom, params, kind="Convolution"):
    return 'layer { name: "%s" type: "%s" bottom: "%s" top: "%s" convolution_param { %s } }\n' % (
        name, kind, bottom, name, params)


@pytest.mark.caffe
def test_convolution_dilation_groups_and_deconvolution():
    text = input_layer("data", (2, 96, 32, 30))
    text += conv("dilated", "data", "num_output: 4 kernel_size: 3 dilation: 2")          # extent 5: 28, 26
    text += conv("dilated_pad", "data", "num_output: 4 kernel_size: 3 dilation: 2 pad: 2")  # 32, 30
    text += conv("grouped", "data", "num_output: 256 kernel_size: 5 pad: 2 group: 2")      # AlexNet's conv2
    text += conv("strided", "data", "num_output: 8 kernel_h: 3 kernel_w: 5 stride: 2 bias_term: false")  # 15, 13
    text += conv("per_axis", "data", "num_output: 8 kernel_size: 3 kernel_size: 1 stride: 1 stride: 2")  # 30, 15
    text += conv("up", "data", "num_output: 8 kernel_size: 4 stride: 2 pad: 1", "Deconvolution")  # 64, 60
    text += conv("up_grouped", "data", "num_output: 8 kernel_size: 2 stride: 2 group: 4", "Deconvolution")
    net, inferred, layers = infer_text(text)
    assert inferred["dilated"] == (2, 4, 28, 26)
    assert inferred["dilated_pad"] == (2, 4, 32, 30)
    assert inferred["grouped"] == (2, 256, 32, 30)
    assert layers["grouped"].params == 256 * 48 * 25 + 256
    assert inferred["strided"] == (2, 8, 15, 13)
    assert layers["strided"].params == 8 * 96 * 15
    assert inferred["per_axis"] == (2, 8, 30, 15)
    assert inferred["up"] == (2, 8, 64, 60)
    assert layers["up"].params == 96 * 8 * 16 + 8
    assert inferred["up_grouped"] == (2, 8, 64, 60)
    assert layers["up_grouped"].params == 96 * 2 * 4 + 8
    agree_with_caffe(net)


@pytest.mark.caffe
def test_reshape_concat_slice_crop_flatten():
    text = input_layer("data", (2, 3, 4, 5)) + input_layer("other", (2, 5, 4, 5)) + input_layer("small", (2, 3, 2, 3))
    text += 'layer { name: "r1" type: "Reshape" bottom: "data" top: "r1" reshape_param { shape { dim: 0 dim: -1 } } }\n'
    text += ('layer { name: "r2" type: "Reshape" bottom: "data" top: "r2" '
             'reshape_param { shape { dim: 0 dim: 0 dim: -1 } } }\n')
    text += ('layer { name: "r3" type: "Reshape" bottom: "data" top: "r3" '
             'reshape_param { axis: 1 num_axes: 2 shape { dim: -1 } } }\n')
    text += ('layer { name: "r4" type: "Reshape" bottom: "data" top: "r4" '
             'reshape_param { axis: -1 shape { dim: 1 } } }\n')
    text += 'layer { name: "cat" type: "Concat" bottom: "data" bottom: "other" top: "cat" }\n'
    text += ('layer { name: "cat0" type: "Concat" bottom: "data" bottom: "data" top: "cat0" '
             'concat_param { axis: 0 } }\n')
    text += ('layer { name: "sl" type: "Slice" bottom: "cat" top: "s1" top: "s2" top: "s3" '
             'slice_param { slice_point: 3 slice_point: 7 } }\n')
    text += 'layer { name: "half" type: "Slice" bottom: "data" top: "h1" top: "h2" slice_param { slice_dim: 0 } }\n'
    text += ('layer { name: "crop" type: "Crop" bottom: "data" bottom: "small" top: "crop" '
             'crop_param { axis: 2 offset: 1 offset: 2 } }\n')
    text += 'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" flatten_param { end_axis: 2 } }\n'
    net, inferred, _ = infer_text(text)
    assert inferred["r1"] == (2, 60)
    assert inferred["r2"] == (2, 3, 20)
    assert inferred["r3"] == (2, 12, 5)
    assert inferred["r4"] == (2, 3, 4, 5, 1)
    assert inferred["cat"] == (2, 8, 4, 5)
    assert inferred["cat0"] == (4, 3, 4, 5)
    assert [inferred[top] for top in ("s1", "s2", "s3")] == [(2, 3, 4, 5), (2, 4, 4, 5), (2, 1, 4, 5)]
    assert inferred["h1"] == inferred["h2"] == (1, 3, 4, 5)
    assert inferred["crop"] == (2, 3, 2, 3)
    assert inferred["flat"] == (2, 12, 5)
    agree_with_caffe(net)


@pytest.mark.caffe
def test_parameter_layers_and_losses():
    text = input_layer("data", (2, 6, 4, 4)) + input_layer("label", (2,)) + input_layer("ids", (2, 3))
    text += 'layer { name: "bn" type: "BatchNorm" bottom: "data" top: "bn" }\n'
    text += 'layer { name: "scale" type: "Scale" bottom: "bn" top: "scale" scale_param { bias_term: true } }\n'
    text += 'layer { name: "bias" type: "Bias" bottom: "scale" top: "bias" bias_param { axis: 1 num_axes: 2 } }\n'
    text += 'layer { name: "prelu" type: "PReLU" bottom: "bias" top: "prelu" }\n'
    text += 'layer { name: "prelu1" type: "PReLU" bottom: "bias" top: "prelu1" prelu_param { channel_shared: true } }\n'
    text += 'layer { name: "sum" type: "Eltwise" bottom: "prelu" bottom: "prelu1" top: "sum" }\n'
    text += ('layer { name: "ip" type: "InnerProduct" bottom: "sum" top: "ip" '
             'inner_product_param { num_output: 5 axis: 1 } }\n')
    text += ('layer { name: "ip2" type: "InnerProduct" bottom: "sum" top: "ip2" '
             'inner_product_param { num_output: 3 axis: 2 bias_term: false } }\n')
    text += ('layer { name: "embed" type: "Embed" bottom: "ids" top: "embed" '
             'embed_param { num_output: 4 input_dim: 10 } }\n')
    text += 'layer { name: "prob" type: "Softmax" bottom: "ip" top: "prob" }\n'
    text += 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n'
    text += 'layer { name: "l2" type: "EuclideanLoss" bottom: "ip" bottom: "ip" top: "l2" loss_weight: 0.5 }\n'
    text += 'layer { name: "acc" type: "Accuracy" bottom: "ip" bottom: "label" top: "acc" top: "per_class" }\n'
    text += 'layer { name: "silence" type: "Silence" bottom: "ip2" bottom: "embed" }\n'
    net, inferred, layers = infer_text(text)
    assert [layers[name].params for name in ("bn", "scale", "bias", "prelu", "prelu1", "sum")] == [13, 12, 24, 6, 1, 0]
    assert layers["ip"].params == 96 * 5 + 5
    assert inferred["ip2"] == (2, 6, 3) and layers["ip2"].params == 16 * 3
    assert inferred["embed"] == (2, 3, 4) and layers["embed"].params == 44
    assert inferred["prob"] == (2, 5)
    assert (inferred["loss"], inferred["l2"], inferred["acc"], inferred["per_class"]) == ((), (), (), (5,))
    assert layers["silence"].tops == []
    agree_with_caffe(net)


@pytest.mark.caffe
def test_our_python_layers():
    text = input_layer("data", (2, 3, 8, 8)) + input_layer("wide", (2, 5, 4, 4))
    text += python_layer("resized", "Resize", ["data"], ["resized"], '{"channels": 5, "height": 4}', counter=False)
    text += python_layer("like", "Resize", ["data", "wide"], ["like"], "{}", counter=False)
    text += python_layer("drop", "DropIn", ["like", "wide"], ["drop", "p"], '{"length": 10}')
    net, inferred, layers = infer_text(text)
    assert inferred["resized"] == (2, 5, 4, 8)
    assert inferred["like"] == (2, 5, 4, 4)
    assert (inferred["drop"], inferred["p"]) == ((2, 5, 4, 4), (1,))
    assert (layers["drop"].params, layers["like"].params) == (2, 0)
    agree_with_caffe(net)


def test_a_top_beyond_caffes_int_max_elements_is_refused_before_caffe():
    """Every dimension fits an int, the count does not: Caffe's Blob::Reshape would CHECK-fail and
    abort the process. Inference (which validation runs before Caffe) refuses it naming the layer."""
    text = input_layer("data", (2, 3, 8, 8))
    text += python_layer("resized", "Resize", ["data"], ["resized"], '{"height": 50000, "width": 50000}',
                         counter=False)
    for check in (lambda net: shapes.infer(net, "TRAIN"), lambda net: validate.check_net(net, "TRAIN")):
        with pytest.raises(ConfigError) as info:
            check(prototxt.parse(text))
        message = str(info.value)
        assert "'resized'" in message and "top 'resized' would have shape (2, 3, 50000, 50000)" in message
        assert "INT_MAX = 2147483647" in message and "\n" not in message
    text = input_layer("data", (2 ** 16, 2 ** 15, 1, 1))  # 2**31 elements: one too many
    with pytest.raises(ConfigError, match="top 'data' would have shape .*INT_MAX"):
        shapes.infer(prototxt.parse(text), "TRAIN")


def test_data_layer_shapes_from_their_parameters():
    text = '''
    layer { name: "mem" type: "MemoryData" top: "mem" top: "mem_label"
            memory_data_param { batch_size: 4 channels: 2 height: 6 width: 5 } }
    layer { name: "dummy" type: "DummyData" top: "d1" top: "d2"
            dummy_data_param { num: 3 channels: 1 channels: 2 height: 4 width: 4 } }
    layer { name: "images" type: "ImageData" top: "img" top: "img_label"
            image_data_param { source: "nowhere.txt" batch_size: 3 new_height: 10 new_width: 12 is_color: false } }
    layer { name: "db" type: "Data" top: "db" top: "db_label" transform_param { crop_size: 9 }
            data_param { source: "nowhere_lmdb" batch_size: 7 } }
    layer { name: "h5" type: "HDF5Data" top: "x" top: "y" hdf5_data_param { source: "nowhere.txt" batch_size: 5 } }
    '''
    _, inferred, _ = infer_text(text)
    assert (inferred["mem"], inferred["mem_label"]) == ((4, 2, 6, 5), (4,))
    assert (inferred["d1"], inferred["d2"]) == ((3, 1, 4, 4), (3, 2, 4, 4))
    assert (inferred["img"], inferred["img_label"]) == ((3, 1, 10, 12), (3,))
    assert (inferred["db"], inferred["db_label"]) == (None, (7,))  # channels are in the database
    assert (inferred["x"], inferred["y"]) == (None, None)
    _, inferred, _ = infer_text(text, {"db": (3, 9, 9), "x": (5, 4), "y": (5,)})
    assert (inferred["db"], inferred["db_label"], inferred["x"]) == ((7, 3, 9, 9), (7,), (5, 4))
    _, inferred, _ = infer_text(text, {"db": (2, 1, 9, 9), "img": (1, 1, 10, 12)})  # a smaller batch
    assert (inferred["db"], inferred["db_label"], inferred["img_label"]) == ((2, 1, 9, 9), (2,), (1,))
    with pytest.raises(ConfigError, match=r"Data 'db': input shape \(7, 3, 8, 8\) for top 'db' disagrees with "
                                          r"the layer's own \(7, \?, 9, 9\)"):
        infer_text(text, {"db": (3, 8, 8)})


@pytest.mark.caffe
def test_phase_rules_match_caffes(write):
    text = input_layer("data", (1, 2))
    text += 'layer { name: "train" type: "ReLU" bottom: "data" top: "a" include { phase: TRAIN } }\n'
    text += 'layer { name: "test" type: "ReLU" bottom: "data" top: "a" include { phase: TEST } }\n'
    text += 'layer { name: "staged" type: "ReLU" bottom: "data" top: "b" include { phase: TEST stage: "x" } }\n'
    text += 'layer { name: "not_x" type: "ReLU" bottom: "data" top: "c" exclude { stage: "x" } }\n'
    text += 'layer { name: "leveled" type: "ReLU" bottom: "data" top: "d" include { min_level: 1 } }\n'
    text += ('layer { name: "either" type: "ReLU" bottom: "data" top: "e" '
             'include { stage: "y" } include { stage: "x" } }\n')
    net = prototxt.parse(text)
    expected = {("TRAIN", ()): ["data", "train", "not_x"],
                ("TEST", ()): ["data", "test", "not_x"],
                ("TEST", ("x",)): ["data", "test", "staged", "either"]}
    for (phase, stages), names in expected.items():
        kept = shapes.phase_net(net, phase, stages)
        assert [layer.get("name") for layer in kept.get_all("layer")] == names
        caffe_net = validate.load_net(net, phase, stages)
        assert [name for name, layer in zip(caffe_net._layer_names, caffe_net.layers) if layer.type != "Split"] == names


@pytest.mark.caffe
def test_legacy_net_inputs():
    text = 'input: "data" input_dim: 2 input_dim: 3 input_dim: 8 input_dim: 8\n' + \
        conv("c", "data", "num_output: 4 kernel_size: 3")
    net, inferred, layers = infer_text(text)
    assert (inferred["data"], inferred["c"]) == ((2, 3, 8, 8), (2, 4, 6, 6))
    assert layers["input"].type == "Input"
    agree_with_caffe(net)


# ---------------------------------------------------------------------------------------------
# Unknown shapes and errors

def test_unknown_layer_type_leaves_shapes_unknown_downstream():
    text = input_layer("data", (2, 3, 8, 8))
    text += 'layer { name: "mystery" type: "MyForkLayer" bottom: "data" top: "m" my_fork_param { k: 1 } }\n'
    text += conv("after", "m", "num_output: 4 kernel_size: 3")
    text += 'layer { name: "relu" type: "ReLU" bottom: "after" top: "after" }\n'
    text += 'layer { name: "py" type: "Python" bottom: "data" top: "py" python_param { module: "x" layer: "Y" } }\n'
    _, inferred, layers = infer_text(text)
    assert (inferred["m"], inferred["after"], inferred["py"]) == (None, None, None)
    assert inferred["data"] == (2, 3, 8, 8)
    assert [layers[name].params for name in ("mystery", "after", "relu", "py")] == [None, None, 0, None]
    assert layers["after"].bottoms == [("m", None)]
    _, layer_list = shapes.infer(prototxt.parse(text))
    with pytest.raises(ConfigError, match="the shape of blob 'after' is unknown .it follows from blob 'm', whose "
                                          "shape is unknown.: shape inference does not know layer 'mystery' of "
                                          "type MyForkLayer; give the shape of 'm' with --input-shape m=C,H,W"):
        shapes.require(inferred, layer_list, "after")
    assert shapes.require(inferred, layer_list, "data") == (2, 3, 8, 8)
    # Given as the message says, the shape flows on.
    _, inferred, _ = infer_text(text, {"m": (2, 3, 8, 8)})
    assert inferred["after"] == (2, 4, 6, 6)


def test_unknown_data_shape_message_names_the_data_layer():
    text = ('layer { name: "db" type: "Data" top: "data" top: "label" data_param { source: "x" batch_size: 2 } }\n'
            + conv("c", "data", "num_output: 4 kernel_size: 3"))
    inferred, layer_list = shapes.infer(prototxt.parse(text))
    with pytest.raises(ConfigError, match="blob 'c' is unknown .it follows from blob 'data', whose shape is "
                                          "unknown.: Data layer 'db' reads it from its source; give the shape of "
                                          "'data' with --input-shape data=C,H,W"):
        shapes.require(inferred, layer_list, "c")


@pytest.mark.parametrize("layers, message", [
    (conv("c", "data", "num_output: 4 kernel_size: 11"),
     r"Convolution 'c': kernel extent 11 \(kernel 11, dilation 1\) is larger than the padded input 8 \+ 2 x 0"),
    (conv("c", "data", "num_output: 4 kernel_size: 3 group: 2"),
     r"Convolution 'c': input channels \(3\) and num_output \(4\) must both be multiples of group \(2\)"),
    (conv("c", "data", "num_output: 4"), r"Convolution 'c': needs \"kernel_size\""),
    (conv("c", "data", "num_output: 4 kernel_size: 3 kernel_size: 3 kernel_size: 3"),
     r"\"kernel_size\" takes 1 or 2 values \(one per spatial axis\), got 3"),
    (pool("p", "data", "kernel_size: 3 pad: 3"), r"Pooling 'p': pad \(3\) must be smaller than the kernel \(3\)"),
    ('layer { name: "e" type: "Eltwise" bottom: "data" bottom: "flat" top: "e" }',
     r"Eltwise 'e': all bottoms must have the same shape, got \(2, 3, 8, 8\), \(2, 192\)"),
    ('layer { name: "k" type: "Concat" bottom: "data" bottom: "flat" top: "k" }',
     r"Concat 'k': bottoms must agree on every axis but the concatenation axis 1, got \(2, 3, 8, 8\), \(2, 192\)"),
    ('layer { name: "s" type: "Slice" bottom: "data" top: "a" top: "b" }',
     r"Slice 's': axis 1 of bottom \(2, 3, 8, 8\) \(3\) does not split evenly into 2 tops"),
    ('layer { name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { shape { dim: 5 dim: -1 } } }',
     r"Reshape 'r': cannot infer the -1 dim: 384 values of bottom \(2, 3, 8, 8\) are not a multiple of 5"),
    ('layer { name: "x" type: "Crop" bottom: "flat" bottom: "data" top: "x" }',
     r"Crop 'x': both bottoms need as many axes, got \(2, 192\) and \(2, 3, 8, 8\)"),
    ('layer { name: "i" type: "InnerProduct" bottom: "data" top: "i" inner_product_param { num_output: 2 axis: 4 } }',
     r"InnerProduct 'i': \"axis\" must be an axis of the 4-axis bottom \(2, 3, 8, 8\), got 4"),
    ('layer { name: "l" type: "SoftmaxWithLoss" bottom: "flat" bottom: "data" top: "l" }',
     r"SoftmaxWithLoss 'l': needs one label per prediction: 2 for scores \(2, 192\)"),
    ('layer { name: "l" type: "SoftmaxWithLoss" bottom: "flat" bottom: "label" top: "l" top: "prob" '
     'loss_weight: 1 loss_weight: 0 }',
     r"SoftmaxWithLoss 'l': Caffe cannot build a SoftmaxWithLoss with a second top; compute the probabilities"),
    ('layer { name: "l" type: "EuclideanLoss" bottom: "flat" bottom: "flat" top: "l" top: "m" }',
     r"EuclideanLoss 'l': needs one loss_weight per top \(2\), got 0; give e.g. loss_weight: 1 loss_weight: 0"),
    ('layer { name: "r" type: "ReLU" bottom: "flat" top: "r" loss_weight: 1 loss_weight: 1 }',
     r"ReLU 'r': needs one loss_weight per top \(1\), got 2"),
    ('layer { name: "r" type: "ReLU" bottom: "nothing" top: "r" }',
     r"ReLU 'r': bottom 'nothing' is not the top of an earlier layer in phase TRAIN"),
    (python_layer("d", "DropIn", ["data", "flat"], ["d"], '{"length": 3}'),
     r"Python 'd': DropIn bottoms prev and new must have the same shape, got \(2, 3, 8, 8\) and \(2, 192\); "
     r"insert a Resize layer"),
])
def test_impossible_shapes_raise_naming_layer_rule_and_shapes(layers, message):
    text = input_layer("data", (2, 3, 8, 8)) + input_layer("label", (2,))
    text += 'layer { name: "flat" type: "Flatten" bottom: "data" top: "flat" }\n' + layers
    with pytest.raises(ConfigError, match=message):
        shapes.infer(prototxt.parse(text))


def test_bad_arguments():
    net = prototxt.parse(input_layer("data", (2, 3)))
    with pytest.raises(ConfigError, match="phase must be TRAIN or TEST, got 'VAL'"):
        shapes.infer(net, "val")
    with pytest.raises(ConfigError, match="input shapes given for dta, which no data layer .* makes; such tops: data"):
        shapes.infer(net, "TRAIN", {"dta": (2, 3)})
    with pytest.raises(ConfigError, match=r"input shape of 'data' must be a list of integers >= 1 such as 3,224,224, "
                                          r"got \(2, 0\)"):
        shapes.infer(net, "TRAIN", {"data": (2, 0)})
    with pytest.raises(ConfigError, match="old V1 net"):
        shapes.infer(prototxt.parse('layers { name: "x" type: RELU }'))


@pytest.mark.parametrize("body, message", ODD_NETS, ids=[body[:30] for body, _ in ODD_NETS])
def test_structurally_odd_nets_are_one_line_config_errors(body, message):
    with pytest.raises(ConfigError) as info:
        shapes.infer(prototxt.parse(ODD_HEAD + body))
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_nameless_layers_are_counted_in_the_users_net_despite_net_level_inputs():
    text = 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\nlayer { type: "Pooling" }\n'
    with pytest.raises(ConfigError, match='^Pooling layer #1: needs a "bottom"'):
        shapes.infer(prototxt.parse(text))


# ---------------------------------------------------------------------------------------------
# Nets users bring (issue 8): fork and Python data layers, fork fields, in-place unknown layers

FORK_DATA = '''
layer { name: "py" type: "Python" top: "data" top: "label"
  python_param { module: "my_seg_layers" layer: "SegData" param_str: "{'batch_size': 4, 'split': 'train'}" } }
layer { name: "fork" type: "ImageLabelmapData" top: "other" top: "map"
  image_data_param { source: "list.txt" batch_size: 2 } }
layer { name: "plain" type: "MyPairData" top: "third" }
'''


def test_channels_height_width_is_one_image_for_python_and_fork_data_layers():
    """Issue 8.1: BLOB=C,H,W means one image; the batch comes from the layer (param_str's or a
    *_param's batch_size), else 1 with a note; it was a 3-axis blob, so pooling refused it."""
    text = FORK_DATA + conv("c", "data", "num_output: 4 kernel_size: 3") + pool("p", "c", "kernel_size: 2 stride: 2")
    notes = []
    inferred, layers = shapes.infer(prototxt.parse(text), "TRAIN",
                                    {"data": (3, 8, 8), "other": (3, 8, 8), "third": (1, 5, 5)}, notes=notes)
    assert (inferred["data"], inferred["other"], inferred["third"]) == ((4, 3, 8, 8), (2, 3, 8, 8), (1, 1, 5, 5))
    assert inferred["p"] == (4, 4, 3, 3)
    assert {layer.name: layer.params for layer in layers}["c"] == 4 * 3 * 9 + 4
    assert notes == ["--input-shape third=1,5,5: MyPairData 'plain' does not say its batch size, so the batch is "
                     "1; give N,C,H,W to choose it"]
    inferred, _ = shapes.infer(prototxt.parse(text), "TRAIN", {"data": (2, 3, 8, 8)})
    assert inferred["p"] == (2, 4, 3, 3)  # N,C,H,W stays accepted as it is


def test_unknown_in_place_layer_keeps_its_blobs_shape():
    """Issue 8.9: an in-place layer cannot change its blob's shape, whatever its type."""
    text = input_layer("data", (2, 3, 8, 8)) + conv("c", "data", "num_output: 4 kernel_size: 3")
    text += 'layer { name: "act" type: "MyForkActivation" bottom: "c" top: "c" }\n'
    text += 'layer { name: "py" type: "Python" bottom: "c" top: "c" python_param { module: "x" layer: "Y" } }\n'
    text += pool("p", "c", "kernel_size: 2 stride: 2")
    _, inferred, layers = infer_text(text)
    assert (inferred["c"], inferred["p"]) == ((2, 4, 6, 6), (2, 4, 3, 3))
    assert [layers[name].params for name in ("act", "py")] == [None, None]  # what they learn stays unknown


@pytest.mark.caffe
def test_forks_ceil_mode_and_unknown_fields():
    """Issue 8.2: Pooling's ceil_mode (a field of several forks) rounds as it says, and Caffe agrees once
    it is translated to round_mode; any other unknown field makes the shapes from there on unknown."""
    text = input_layer("data", (1, 2, 7, 7)) + pool("floor", "data", "kernel_size: 2 stride: 2 ceil_mode: false")
    text += pool("ceil", "data", "kernel_size: 2 stride: 2 ceil_mode: true")
    net, inferred, _ = infer_text(text)
    assert (inferred["floor"], inferred["ceil"]) == ((1, 2, 3, 3), (1, 2, 4, 4))
    caffe_net = validate.load_net(validate.for_caffe(net), "TRAIN")
    assert (caffe_net.blobs["floor"].data.shape, caffe_net.blobs["ceil"].data.shape) == ((1, 2, 3, 3), (1, 2, 4, 4))
    text = input_layer("data", (1, 2, 7, 7)) + pool("p", "data", "kernel_size: 2 stride: 2 pad_mode: VALID")
    text += conv("c", "p", "num_output: 3 kernel_size: 1")
    text += 'layer { name: "relu" type: "ReLU" bottom: "c" top: "c" relu_param { fork_slope: 1 } }\n'
    notes = []
    inferred, layers = shapes.infer(prototxt.parse(text), notes=notes)
    assert (inferred["p"], inferred["c"]) == (None, None)
    assert notes == ["Pooling 'p' has field pooling_param.pad_mode, which this Caffe does not know (a fork's?): its "
                     "output and the shapes that follow from it are unknown (?)"]
