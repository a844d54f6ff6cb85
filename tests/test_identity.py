"""--replica-init identity: replicas start as the identity map, written as a .caffemodel."""
import io
import os

import numpy as np
import pytest

from conftest import HAS_CAFFE
from dropin_caffe import env
from dropin_caffe.cli.expand_net import main as expand_main
from dropin_caffe.errors import ConfigError
from dropin_caffe.experiments.datasets import sources
from dropin_caffe.netgen import identity, prototxt, templates
from dropin_caffe.netgen.expand import expand_net

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe

# cifar10_quick on MNIST-sized images; its conv2 is followed by relu2, so a replica reads a
# non-negative blob and its identity start (then its copied ReLU) passes it on unchanged.
SETTINGS = {"dummy_data": True, "image_shape": [1, 28, 28], "train_batch_size": 16, "test_batch_size": 16}


def mnist_images(count):
    train, _ = sources.load("mnist")[:2]
    return train.images[:count].astype(np.float32) / 255.0


@pytest.mark.caffe
def test_identity_replicas_leave_the_output_unchanged_at_step_0(tmp_path):
    out_dir = str(tmp_path / "out")
    expansion = expand_net(template="cifar10_quick", replicate={"conv2": 2}, dropin=False, replica_init="identity",
                           settings=SETTINGS)
    written = dict(expansion.write(out_dir))
    assert os.path.basename(written["weights"]) == "cifar10_quick_plain_init.caffemodel"
    assert expansion.train_command(out_dir).endswith("--weights=" + written["weights"])
    original_path = str(tmp_path / "original.prototxt")
    with open(original_path, "w") as f:
        f.write(templates.render_net("cifar10_quick", **SETTINGS))
    caffe.set_random_seed(1)
    original = caffe.Net(original_path, caffe.TEST)
    expanded = caffe.Net(written["net"], caffe.TEST, weights=written["weights"])
    assert sorted(set(expanded.params) - set(original.params)) == ["conv2_1", "conv2_2"]
    for name, blobs in original.params.items():  # the original's weights, copied into the expanded net
        for mine, theirs in zip(expanded.params[name], blobs):
            mine.data[...] = theirs.data
    weight, bias = (blob.data for blob in expanded.params["conv2_1"])
    assert weight.shape == (32, 32, 5, 5) and weight.sum() == 32 and not bias.any()
    assert all(weight[c, c, 2, 2] == 1 for c in range(32))
    images = mnist_images(16)
    outputs = []
    for net in (original, expanded):
        net.blobs["data"].data[...] = images
        net.forward(start="conv1")
        outputs.append(net.blobs["ip2"].data.copy())
    assert np.abs(outputs[0]).max() > 0
    np.testing.assert_allclose(outputs[1], outputs[0], rtol=1e-6, atol=1e-7)
    assert np.array_equal(expanded.blobs["conv2_2"].data, original.blobs["conv2"].data)


@pytest.mark.caffe
def test_the_cli_writes_the_weights_and_prints_the_caffe_train_command(tmp_path):
    out_dir = str(tmp_path / "out")
    out, err = io.StringIO(), io.StringIO()
    code = expand_main(["--preset", "lenet-deep", "--depth", "2", "--replica-init", "identity", "--set",
                        "dummy_data=true", "-q", "-o", out_dir], out=out, err=err)
    assert code == 0, err.getvalue()
    weights = os.path.join(out_dir, "lenet_deep_dropin_init.caffemodel")
    solver = os.path.join(out_dir, "lenet_deep_solver_dropin.prototxt")
    assert "wrote weights %s" % weights in out.getvalue()
    command = env.command(["caffe", "train", "--solver=" + solver, "--weights=" + weights])
    assert "train with: %s   (" % command in out.getvalue()  # through caffe-env: caffe need not be on PATH
    assert "--weights=TRAINED.caffemodel,%s" % weights in out.getvalue()
    net = caffe.Net(os.path.join(out_dir, "lenet_deep_dropin.prototxt"), caffe.TEST, weights=weights)
    for name in ("conv2_1", "conv2_2"):  # 3x3 replicas of 50 channels
        weight = net.params[name][0].data
        expected = np.zeros((50, 50, 3, 3), np.float32)
        expected[range(50), range(50), 1, 1] = 1
        assert np.array_equal(weight, expected) and not net.params[name][1].data.any()


def layer_net(text):
    return prototxt.parse('layer { name: "in" type: "Input" top: "x" input_param { shape { dim: 1 } } }\n' + text)


@pytest.mark.parametrize("layer, shape, message", [
    ('type: "Convolution" convolution_param { num_output: 4 kernel_size: 3 pad: 1 }', (2, 3, 8, 8),
     "maps 3 channels to 4"),
    ('type: "Convolution" convolution_param { num_output: 3 kernel_size: 2 }', (2, 3, 8, 8),
     "has kernel 2x2 and stride 1x1"),
    ('type: "Convolution" convolution_param { num_output: 3 kernel_size: 3 pad: 1 stride: 2 }', (2, 3, 8, 8),
     "has kernel 3x3 and stride 2x2"),
    ('type: "InnerProduct" inner_product_param { num_output: 10 }', (2, 3, 2, 2), "maps 12 inputs to 10 outputs"),
    ('type: "Scale" scale_param { bias_term: true }', (2, 3, 8, 8), "is a Scale layer"),
])
def test_a_replica_that_cannot_be_the_identity_is_refused_in_one_line(layer, shape, message):
    net = layer_net('layer { name: "rep" bottom: "x" top: "rep" %s }' % layer)
    with pytest.raises(ConfigError) as info:
        identity.identity_weights(net, ["rep"], {"x": shape})
    text = str(info.value)
    assert text.startswith("--replica-init identity: replica 'rep' ") and message in text and "\n" not in text


def test_grouped_convolution_and_inner_product_identities():
    net = layer_net('layer { name: "g" type: "Convolution" bottom: "x" top: "g" '
                    'convolution_param { num_output: 4 group: 2 kernel_size: 3 pad: 1 bias_term: false } }\n'
                    'layer { name: "ip" type: "InnerProduct" bottom: "y" top: "ip" '
                    'inner_product_param { num_output: 6 } }')
    found = identity.identity_weights(net, ["g", "ip"], {"x": (1, 4, 5, 5), "y": (1, 6)})
    (kind, blobs), (ip_kind, ip_blobs) = found["g"], found["ip"]
    assert kind == "Convolution" and len(blobs) == 1 and blobs[0].shape == (4, 2, 3, 3)
    x = np.random.default_rng(0).standard_normal((4, 5, 5))
    # grouped conv at the centre tap: output channel o reads input channel (o // 2) * 2 + j of its group
    out = np.stack([sum(blobs[0][o, j, 1, 1] * x[(o // 2) * 2 + j] for j in range(2)) for o in range(4)])
    assert np.array_equal(out, x)
    assert ip_kind == "InnerProduct" and np.array_equal(ip_blobs[0], np.eye(6)) and not ip_blobs[1].any()


def test_expand_net_refuses_identity_for_a_non_weight_replica_and_writes_nothing(tmp_path):
    with pytest.raises(ConfigError, match=r"^--replica-init identity: replica 'norm1_1' is a LRN layer"):
        expand_net(template="cifar10_full", replicate={"norm1": 1}, dropin=False, replica_init="identity",
                   settings={"dummy_data": True}, validate=False)
    with pytest.raises(ConfigError, match='--replica-init must be "identity"'):
        expand_net(template="lenet", replicate={"conv2": 1}, dropin=False, replica_init="zeros", validate=False)
