"""expand_net --widen LAYER=C2 --weights: the widened net starts as the trained one, proven in Caffe (issue 24).

The widened layer keeps its trained blobs, its consumers get zero input weights for the new channels,
the extra layer's copied followers start neutral; the start is compared with the trained net at p = 0
and p = 1, by the proof and again here directly in pycaffe.
"""
import io
import os

import numpy as np
import pytest
from test_weights import differences, trained  # noqa: F401 (the fixture)

from conftest import HAS_CAFFE
from dropin_caffe.cli.expand_net import main as expand_main
from dropin_caffe.errors import ConfigError
from dropin_caffe.netgen import export, identity, prototxt, start
from dropin_caffe.netgen.expand import expand_net

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests
    import caffe

pytestmark = pytest.mark.caffe  # every test here patches a model trained in Caffe


def run_cli(argv):
    out, err = io.StringIO(), io.StringIO()
    code = expand_main(argv, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def outputs_in_pycaffe(net, weights, data_shapes, test, tmp_path, label):
    """{blob: array} of every blob of `net` (a prototxt path) in TEST with the caffemodel `weights`, data
    layers as Input fed the same seeded gaussian input, every DropIn's "test" mode `test`."""
    form = start._input_form(export.reader.read_net(net), data_shapes, test)
    path = tmp_path / ("%s.prototxt" % label)
    path.write_text(prototxt.dumps(form))
    built = caffe.Net(str(path), caffe.TEST, weights=weights)
    rng = np.random.default_rng(7)
    for name in built.inputs:
        blob = built.blobs[name].data
        blob[...] = rng.standard_normal(blob.shape) if name == built.inputs[0] else 0
    built.forward()
    return {name: blob.data.copy() for name, blob in built.blobs.items()}


def relative(got, want):
    return float(np.abs(got - want).max() / max(float(np.abs(want).max()), 1e-12))


def check_widened_start(net, weights, widen, data_shapes, compared, tmp_path):
    """Widen `net` with --weights through the CLI; the proof's and pycaffe's differences at p = 0 and p = 1."""
    out_dir = tmp_path / "out"
    argv = [net, "--dropin-length", "10", "--weights", weights, "-o", str(out_dir)]
    for name, width in widen.items():
        argv += ["--widen", "%s=%d" % (name, width)]
    code, _, err = run_cli(argv)
    assert code == 0, err
    stem = os.path.basename(net)[: -len(".prototxt")]
    expanded, init = str(out_dir / (stem + "_dropin.prototxt")), str(out_dir / (stem + "_dropin_init.caffemodel"))
    proof = differences(line[len("note: "):] for line in err.splitlines() if line.startswith("note: "))
    assert set(proof) == {"at p = 0", "at p = 1"}
    assert all(promised and difference <= 1e-5 for promised, difference in proof.values()), proof
    want = outputs_in_pycaffe(net, weights, data_shapes, None, tmp_path, "original")[compared]
    direct = {}
    for p, test in (("0", "prev"), ("1", "new")):
        got = outputs_in_pycaffe(expanded, init, data_shapes, test, tmp_path, "expanded" + p)
        direct["at p = " + p] = relative(got[compared], want)
        (name, width), = widen.items()
        joined = got[name + "_widen"].reshape(1, width, -1)[:, got[name].shape[1]:]
        assert joined.any() == (p == "1")  # the new units enter at p = 1 (and are zero at p = 0)
    assert all(difference <= 1e-5 for difference in direct.values()), direct
    return {label: (proof[label][1], direct[label]) for label in proof}, export.read_weights(init)


@pytest.mark.parametrize("widen", [{"conv1": 30}, {"ip1": 600}])
def test_lenet_widened_with_trained_weights_starts_as_the_trained_net(trained, widen, tmp_path):  # noqa: F811
    net, _, weights = trained
    found, init = check_widened_start(net, weights, widen, {"data": (1, 1, 28, 28), "label": (1,)}, "ip2", tmp_path)
    print("LeNet %s (proof, pycaffe):" % widen, found)
    stored = export.read_weights(weights)
    (name, width), = widen.items()
    consumer, old = ("conv2", 20) if name == "conv1" else ("ip2", 500)
    assert all(np.array_equal(a, b) for a, b in zip(init[name], stored[name]))  # the widened layer, unchanged
    assert init[name + "_extra"][0].shape[0] == width - old and np.abs(init[name + "_extra"][0]).max() > 0
    weight = init[consumer][0]
    assert weight.shape[1] == width and np.array_equal(weight[:, :old], stored[consumer][0])
    assert not weight[:, old:].any() and np.array_equal(init[consumer][1], stored[consumer][1])


def test_lenet_widened_at_conv2_pads_ip1s_flattened_input_channel_major(trained, tmp_path):  # noqa: F811
    """ip1 reads pool2 (50 x 4 x 4) flattened: each new channel's 16 weights come after the old 800."""
    net, _, weights = trained
    expansion = expand_net(net, widen={"conv2": 60}, dropin_length=10, weights=weights)
    weight, stored = expansion.initial_weights["ip1"][1][0], export.read_weights(weights)["ip1"][0]
    assert weight.shape == (500, 960) and np.array_equal(weight[:, :800], stored) and not weight[:, 800:].any()
    found = differences(expansion.notes)
    print("LeNet conv2=60:", found)
    assert set(found) == {"at p = 0", "at p = 1"} and all(promised and difference <= 1e-5
                                                          for promised, difference in found.values())


# Labelled 8x3x8x8 gaussian data into an 8-channel conv1: the head of both nets below.
HEAD = '''layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { data_filler { type: "gaussian" std: 1 } data_filler { type: "uniform" min: 0 max: 3.99 }
                     shape { dim: 8 dim: 3 dim: 8 dim: 8 } shape { dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 weight_filler { type: "msra" } } }
'''

BLOCKS = '''name: "blocks"
''' + HEAD + '''layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
  convolution_param { num_output: 8 kernel_size: 3 pad: 1 GROUP weight_filler { type: "msra" } } }
layer { name: "bn2" type: "BatchNorm" bottom: "conv2" top: "conv2" }
layer { name: "scale2" type: "Scale" bottom: "conv2" top: "conv2" scale_param { bias_term: true } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "conv2" }
layer { name: "pool" type: "Pooling" bottom: "conv2" top: "pool" pooling_param { pool: AVE global_pooling: true } }
layer { name: "fc" type: "InnerProduct" bottom: "pool" top: "fc"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
'''


def train_20(tmp_path, name, text):
    """(net, caffemodel) of the net `text` on DummyData, trained 20 iterations by pycaffe's SGDSolver,
    so that BatchNorm's statistics and Scale's weights are not their start."""
    net = tmp_path / ("%s.prototxt" % name)
    net.write_text(text)
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\nbase_lr: 0.05\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 20\ndisplay: 0\n'
                      'snapshot_after_train: false\nsolver_mode: CPU\nrandom_seed: 1\n' % net)
    sgd = caffe.SGDSolver(str(solver))
    sgd.step(20)
    model = str(tmp_path / ("%s.caffemodel" % name))
    sgd.net.save(model)
    return str(net), model


@pytest.fixture
def blocks(tmp_path):
    """Convolution + BatchNorm + Scale + ReLU blocks, trained (`train_20`)."""
    return train_20(tmp_path, "blocks", BLOCKS.replace("GROUP ", ""))  # SoftmaxWithLoss truncates labels to 0..3


def test_conv_bn_scale_blocks_widened_with_trained_weights_start_as_the_trained_net(blocks, tmp_path):
    net, weights = blocks
    stored = export.read_weights(weights)
    assert np.abs(stored["bn1"][0]).max() > 0 and stored["bn1"][2][0] > 1  # trained statistics
    found, init = check_widened_start(net, weights, {"conv1": 12}, {"data": (1, 3, 8, 8), "label": (1,)}, "fc",
                                      tmp_path)
    print("Conv+BN+Scale blocks conv1=12 (proof, pycaffe):", found)
    bn, scale = init["conv1_extra_batchnorm"], init["conv1_extra_scale"]
    assert not bn[0].any() and np.all(bn[1] == 1) and np.all(bn[2] == 1) and bn[0].shape == (4,)
    assert np.all(scale[0] == 1) and not scale[1].any()
    assert np.array_equal(init["conv2"][0][:, :8], stored["conv2"][0]) and not init["conv2"][0][:, 8:].any()
    assert all(np.array_equal(a, b) for name in ("conv1", "bn1", "scale1", "bn2", "scale2")
               for a, b in zip(init[name], stored[name]))


def test_a_consumer_with_group_2_is_refused_naming_it_nothing_written(tmp_path):
    net = tmp_path / "grouped.prototxt"
    net.write_text(BLOCKS.replace("GROUP", "group: 2"))
    model = str(tmp_path / "grouped.caffemodel")
    caffe.Net(str(net), caffe.TEST).save(model)
    out_dir = str(tmp_path / "out")
    code, out, err = run_cli([str(net), "--widen", "conv1=12", "--dropin-length", "10", "--weights", model,
                              "-o", out_dir])
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert err.startswith("expand_net.py: --widen conv1=12 with --weights: conv2 is a grouped Convolution "
                          "(group: 2): "), err
    assert not os.path.exists(out_dir)


@pytest.mark.parametrize("between, named", [
    ('layer { name: "soft" type: "Softmax" bottom: "conv1" top: "soft" }', "soft"),
    ('layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1" pooling_param { pool: MAX kernel_size: 1 } }'
     '\nlayer { name: "norm" type: "LRN" bottom: "pool1" top: "soft" lrn_param { local_size: 3 } }', "norm"),
])
def test_a_layer_that_mixes_channels_before_the_consumer_is_refused(tmp_path, between, named):
    """(An LRN right after conv1's chain is one of its followers: each part gets its own copy, which mixes
    no new channel into the old ones, so that one is not refused.)"""
    text = BLOCKS.replace("GROUP ", "").replace('layer { name: "conv2" type: "Convolution" bottom: "conv1"',
                                                between + '\nlayer { name: "conv2" type: "Convolution" bottom: "soft"')
    net = tmp_path / "mixing.prototxt"
    net.write_text(text)
    model = tmp_path / "unread.caffemodel"
    model.write_bytes(b"")  # refused before it is read
    with pytest.raises(ConfigError) as info:
        expand_net(str(net), widen={"conv1": 12}, dropin_length=10, weights=str(model))
    message = str(info.value)
    assert message.startswith("--widen conv1=12 with --weights: %s (" % named) and "\n" not in message, message
    if "LRN" in between:  # within each channel it mixes none: conv2 is the consumer
        within = export.reader.read_net(text.replace("local_size: 3", "local_size: 3 norm_region: WITHIN_CHANNEL"))
        assert [layer.get("name") for layer in start.widenings(within, [("conv1", 12)])[0].consumers] == ["conv2"]


BETWEEN = '''name: "between"
''' + HEAD + '''layer { name: "prelu1" type: "PReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "bn" type: "BatchNorm" bottom: "pool1" top: "pool1" }
layer { name: "scale" type: "Scale" bottom: "pool1" top: "pool1" scale_param { bias_term: true } }
layer { name: "up" type: "Deconvolution" bottom: "pool1" top: "up"
  convolution_param { num_output: 5 kernel_size: 2 stride: 2 weight_filler { type: "msra" } } }
layer { name: "fc" type: "InnerProduct" bottom: "up" top: "fc"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "label" top: "loss" }
'''


def test_a_deconvolution_consumer_and_batchnorm_between_are_padded_and_start_as_the_trained_net(tmp_path):
    """conv1 (with a PReLU follower) -> Pooling -> BatchNorm + Scale -> Deconvolution: the deconvolution's
    weights (in x out x kh x kw) get zeros along axis 0, BatchNorm and Scale grow neutral channels."""
    net, model = train_20(tmp_path, "between", BETWEEN)
    stored = export.read_weights(model)
    found, init = check_widened_start(net, model, {"conv1": 12}, {"data": (1, 3, 8, 8), "label": (1,)}, "fc",
                                      tmp_path)
    print("conv1 -> pool -> BN + Scale -> Deconvolution, conv1=12 (proof, pycaffe):", found)
    up = init["up"][0]
    assert up.shape == (12, 5, 2, 2) and np.array_equal(up[:8], stored["up"][0]) and not up[8:].any()
    factor = stored["bn"][2][0]
    assert np.array_equal(init["bn"][0][:8], stored["bn"][0]) and not init["bn"][0][8:].any()
    assert np.all(init["bn"][1][8:] == factor) and init["bn"][2][0] == factor  # variance 1 once divided
    assert np.all(init["scale"][0][8:] == 1) and not init["scale"][1][8:].any()
    assert np.array_equal(init["conv1_extra_prelu"][0], stored["prelu1"][0][:4])  # the original's slopes


def test_lenet_widened_without_dropin_is_the_trained_net(trained):  # noqa: F811
    """--no-dropin: the consumers read the Concat itself, the wide net, which the zeros make the trained one."""
    net, _, weights = trained
    expansion = expand_net(net, widen={"ip1": 600}, dropin=False, weights=weights)
    found = differences(expansion.notes)
    print("LeNet ip1=600 without DropIn:", found)
    assert set(found) == {"without DropIn"} and found["without DropIn"][0] and found["without DropIn"][1] <= 1e-5


def test_a_consumer_whose_inputs_are_no_multiple_of_the_channels_is_refused(trained, tmp_path):  # noqa: F811
    net, _, weights = trained
    stored = export.read_weights(weights)
    model = str(tmp_path / "odd.caffemodel")
    with open(model, "wb") as f:
        f.write(identity.caffemodel(dict({name: ("X", arrays) for name, arrays in stored.items()},
                                         ip1=("InnerProduct", [np.zeros((500, 801), np.float32), stored["ip1"][1]]))))
    with pytest.raises(ConfigError) as info:
        expand_net(net, widen={"conv2": 60}, dropin_length=10, weights=model)
    assert str(info.value) == ("--weights %s does not fit layer 'ip1': it reads 801 inputs, not a multiple of conv2's "
                               "50 channels; give the .caffemodel trained with this net" % model)
