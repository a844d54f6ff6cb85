"""The V1-to-current net upgrade, checked against Debian Caffe's own upgrade_net_proto_text."""
import glob
import os
import subprocess
import tempfile

import pytest
from google.protobuf import text_format

from conftest import HAS_CAFFE
from dropin_caffe.errors import ConfigError
from dropin_caffe.netgen.prototxt import Enum, Message, dumps, parse, read
from dropin_caffe.netgen.upgrade import V1_LAYER_TYPES, needs_upgrade, upgrade_net

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    from caffe.proto import caffe_pb2

CAFFE_DOC = "/usr/share/doc/caffe-doc"

# V1 nets written for these tests. Nested fields are in caffe.proto's field order, and floats
# have at most 6 significant digits, because Caffe prints its messages that way: then Caffe's
# upgraded file and ours must be equal trees, with no normalisation at all.
V1_NETS = {
    "lenet_train_test": """
        name: "LeNet"
        layers {
          name: "mnist" type: DATA top: "data" top: "label"
          data_param { source: "examples/mnist/mnist_train_lmdb" batch_size: 64 backend: LMDB
                       scale: 0.00390625 }
          include { phase: TRAIN }
        }
        layers {
          name: "mnist" type: DATA top: "data" top: "label"
          transform_param { scale: 0.00390625 }
          data_param { source: "examples/mnist/mnist_test_lmdb" batch_size: 100 backend: LMDB }
          include: { phase: TEST }
        }
        layers {
          name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
          blobs_lr: 1 blobs_lr: 2
          convolution_param { num_output: 20 kernel_size: 5 stride: 1
                              weight_filler { type: "xavier" } bias_filler { type: "constant" } }
        }
        layers { name: "pool1" type: POOLING bottom: "conv1" top: "pool1"
                 pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
        layers { name: "ip1" type: INNER_PRODUCT bottom: "pool1" top: "ip1"
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1 weight_decay: 0
                 inner_product_param { num_output: 500 weight_filler { type: "xavier" } } }
        layers { name: "relu1" type: RELU bottom: "ip1" top: "ip1" }
        layers { name: "ip2" type: INNER_PRODUCT bottom: "ip1" top: "ip2"
                 inner_product_param { num_output: 10 } }
        layers { name: "accuracy" type: ACCURACY bottom: "ip2" bottom: "label" top: "accuracy"
                 include { phase: TEST } }
        layers { name: "loss" type: SOFTMAX_LOSS bottom: "ip2" bottom: "label" top: "loss" }
    """,
    "deploy_input_dim": """
        name: "CaffeNetish"
        input: "data"
        input_dim: 10 input_dim: 3 input_dim: 227 input_dim: 227
        force_backward: true
        layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
                 convolution_param { num_output: 96 kernel_size: 11 stride: 4 } }
        layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
        layers { name: "norm1" type: LRN bottom: "conv1" top: "norm1"
                 lrn_param { local_size: 5 alpha: 0.0001 beta: 0.75 } }
        layers { name: "pool1" type: POOLING bottom: "norm1" top: "pool1"
                 pooling_param { pool: AVE kernel_size: 3 stride: 2 } }
        layers { name: "fc6" type: INNER_PRODUCT bottom: "pool1" top: "fc6"
                 inner_product_param { num_output: 4096 } }
        layers { name: "drop6" type: DROPOUT bottom: "fc6" top: "fc6" dropout_param { dropout_ratio: 0.5 } }
        layers { name: "prob" type: SOFTMAX bottom: "fc6" top: "prob" }
    """,
    "two_inputs_input_shape": """
        name: "Regression"
        input: "x" input_shape { dim: 4 dim: 8 }
        input: "y" input_shape { dim: 4 dim: 1 }
        layers { name: "fc" type: INNER_PRODUCT bottom: "x" top: "fc" inner_product_param { num_output: 1 } }
        layers { name: "loss" type: EUCLIDEAN_LOSS bottom: "fc" bottom: "y" top: "loss" loss_weight: 2 }
    """,
    "bare_input_is_dropped": """
        input: "data"
        layers { name: "sig" type: SIGMOID bottom: "data" top: "sig" }
    """,
    "shared_weights_and_numbers": """
        name: "Siamese"
        layers { name: "ip" type: 14 bottom: "a" top: "ip"
                 param: "w" param: "b" blob_share_mode: PERMISSIVE blob_share_mode: STRICT
                 blobs_lr: 1 blobs_lr: 2 weight_decay: 1
                 inner_product_param { num_output: 10 } }
        layers { name: "ip_p" type: INNER_PRODUCT bottom: "b" top: "ip_p"
                 param: "w" param: "b" blobs_lr: 1 blobs_lr: 2 blobs_lr: 3
                 inner_product_param { num_output: 10 } }
        layers { name: "loss" type: CONTRASTIVE_LOSS bottom: "ip" bottom: "ip_p" bottom: "sim" top: "loss"
                 loss_weight: 1 exclude { stage: "deploy" }
                 contrastive_loss_param { margin: 1 } }
    """,
    "image_and_window_data": """
        layers { name: "images" type: IMAGE_DATA top: "data" top: "label"
                 image_data_param { source: "list.txt" batch_size: 8 new_height: 64 new_width: 64
                                    scale: 0.5 mean_file: "mean.binaryproto" crop_size: 56 mirror: true } }
        layers { name: "windows" type: WINDOW_DATA top: "wdata" top: "wlabel" }
        layers { name: "plain" type: DATA top: "d" top: "l" }
        layers { name: "silence" type: SILENCE bottom: "wdata" bottom: "wlabel" bottom: "d" bottom: "l" }
    """,
    "every_v1_type": "\n".join('layers { name: "l%d" type: %s }' % (number, name)
                               for name, (number, _) in sorted(V1_LAYER_TYPES.items(), key=lambda t: t[1])),
}


def caffe_upgrade(path):
    """Debian Caffe's upgrade_net_proto_text on `path`, read back with our parser."""
    with tempfile.TemporaryDirectory() as scratch:  # never beside the input: it may be read-only
        out = os.path.join(scratch, "upgraded.prototxt")
        done = subprocess.run(["upgrade_net_proto_text", path, out], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True)
        assert done.returncode == 0, done.stderr
        return read(out)


def caffe_message(tree):
    return text_format.Parse(dumps(tree), caffe_pb2.NetParameter()).SerializeToString(deterministic=True)


@pytest.mark.caffe
@pytest.mark.parametrize("name", sorted(V1_NETS))
def test_upgrade_matches_caffe(write, name):
    path = write(name + ".prototxt", V1_NETS[name])
    original = read(path)
    ours = upgrade_net(original)
    theirs = caffe_upgrade(path)
    assert ours == theirs
    assert caffe_message(ours) == caffe_message(theirs)
    assert original == read(path)  # the input tree was not changed
    assert not needs_upgrade(ours) and needs_upgrade(original)


def test_upgrade_results_by_hand():
    # The same facts as the comparison above, spelled out for the reader.
    net = upgrade_net(parse(V1_NETS["lenet_train_test"]))
    layers = net.get_all("layer")
    assert [layer.get("type") for layer in layers] == [
        "Data", "Data", "Convolution", "Pooling", "InnerProduct", "ReLU", "InnerProduct", "Accuracy",
        "SoftmaxWithLoss"]
    assert layers[0].get("transform_param") == Message([["scale", 0.00390625]])
    assert "scale" not in layers[0].get("data_param")
    assert layers[2].get_all("param") == [Message([["lr_mult", 1]]), Message([["lr_mult", 2]])]
    assert layers[4].get_all("param") == [Message([["lr_mult", 1], ["decay_mult", 1]]),
                                          Message([["lr_mult", 2], ["decay_mult", 0]])]
    assert layers[7].get("include") == Message([["phase", Enum("TEST")]])

    deploy = upgrade_net(parse(V1_NETS["deploy_input_dim"]))
    assert [name for name, _ in deploy.fields][:3] == ["name", "force_backward", "layer"]
    assert deploy.get("layer") == parse('name: "input" type: "Input" top: "data" '
                                        "input_param { shape { dim: 10 dim: 3 dim: 227 dim: 227 } }")


@pytest.mark.caffe
def test_float_spelling_differs_but_caffe_reads_the_same_net(write):
    # Caffe prints floats its own way (2.0 as 2, 1/255 with 9 digits); the values are identical.
    path = write("floats.prototxt", """
        layers { name: "d" type: DATA top: "d" data_param { source: "s" scale: 0.0039215684 } }
        layers { name: "c" type: CONVOLUTION bottom: "d" top: "c" blobs_lr: 2.0 weight_decay: 1.0
                 convolution_param { num_output: 1 kernel_size: 1 } }
    """)
    ours = upgrade_net(read(path))
    theirs = caffe_upgrade(path)
    assert ours != theirs
    assert caffe_message(ours) == caffe_message(theirs)


def test_fork_fields_in_v1_layers_are_kept():
    net = upgrade_net(parse("""
        layers { name: "p" type: POOLING bottom: "x" top: "y" custom_param { ratio: 3 }
                 pooling_param { pool: MAX } blobs_lr: 0 }
    """))
    assert net == parse('layer { name: "p" type: "Pooling" bottom: "x" top: "y" param { lr_mult: 0 } '
                        "custom_param { ratio: 3 } pooling_param { pool: MAX } }")


@pytest.mark.caffe
def test_mixed_layer_and_layers_is_refused_as_caffe_refuses_it(write):
    text = """
        layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 } } }
        layers { name: "relu" type: RELU bottom: "data" top: "data" }
    """
    with pytest.raises(ConfigError) as caught:
        upgrade_net(parse(text))
    assert str(caught.value).startswith(
        "net mixes `layer` and `layers`, got 1 `layer` and 1 `layers` blocks: Caffe silently ignores the "
        "`layer` blocks of such a file (Caffe 1.0 refuses it); upgrade the `layers` with "
        "upgrade_net_proto_text or use one form")
    path = write("mixed.prototxt", text)
    done = subprocess.run(["upgrade_net_proto_text", path, path + ".out"], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE)
    assert done.returncode != 0 and not os.path.exists(path + ".out")


STOCK_NETS = sorted(path for path in glob.glob(os.path.join(CAFFE_DOC, "**", "*.prototxt*"), recursive=True)
                    if "solver" not in os.path.basename(path))


@pytest.mark.caffe
def test_current_format_nets_come_back_unchanged():
    assert len(STOCK_NETS) >= 25
    for path in STOCK_NETS:
        net = read(path)
        assert not needs_upgrade(net), path
        assert upgrade_net(net) == net == read(path), path


@pytest.mark.caffe
@pytest.mark.parametrize("relative", ["examples/mnist/lenet_train_test.prototxt",
                                      "examples/cifar10/cifar10_quick.prototxt",
                                      "models/bvlc_reference_caffenet/deploy.prototxt"])
def test_caffe_also_leaves_current_nets_unchanged(relative):
    # Caffe's upgrade also rewrites BatchNorm's three param specs (lr_mult/decay_mult 0) on nets
    # already in the current format; that is not a format upgrade and upgrade_net leaves it out.
    path = os.path.join(CAFFE_DOC, relative)
    assert caffe_upgrade(path) == upgrade_net(read(path)) == read(path)


@pytest.mark.parametrize("text, message", [
    ('layers { layer { name: "old" type: "conv" } }',
     'V1 layer block 1 holds a V0 `layer { ... }` (Caffe before 2014): upgrade the file with'),
    ('layers { name: "x" type: SWISH }',
     'V1 layer "x" (layers block 1): type must be a V1 layer type such as CONVOLUTION, got SWISH'),
    ('layers { name: "a" type: RELU } layers { name: "x" type: 40 }',
     'V1 layer "x" (layers block 2): type number must be 0..39, got 40'),
    ('input: "data" input_dim: 1 input_dim: 3 input_dim: 8',
     "net inputs: need 4 input_dim per input (N, C, H, W), got 1 input and 3 input_dim"),
    ('input: "a" input: "b" input_shape { dim: 1 }',
     "net inputs: need one input_shape per input, got 2 input and 1 input_shape"),
])
def test_upgrade_errors(text, message):
    with pytest.raises(ConfigError) as caught:
        upgrade_net(parse(text))
    assert str(caught.value).startswith(message)
