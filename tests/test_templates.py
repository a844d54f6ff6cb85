"""The built-in stock nets and solvers: rendered, parsed by caffe_pb2 and run by Caffe."""
import subprocess
import sys

import numpy as np
import pytest
from google.protobuf import text_format

from conftest import HAS_CAFFE, REPO
from dropin_caffe.errors import ConfigError
from dropin_caffe.netgen import templates

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe
    import lmdb
    from caffe.proto import caffe_pb2

# Worked out from the architectures: (weight layers, classes, {layer: weight shape}).
# AlexNet's grouped convs see half the input maps; pool5 is 256x6x6 = 9216; VGG's five
# pools take 224 to 7, so fc6 sees 512x7x7 = 25088; CIFAR's three pools take 32 to 4.
FACTS = {
    "lenet": (4, 10, {"conv1": (20, 1, 5, 5), "conv2": (50, 20, 5, 5), "ip1": (500, 800)}),
    "cifar10_quick": (5, 10, {"conv2": (32, 32, 5, 5), "conv3": (64, 32, 5, 5), "ip1": (64, 1024)}),
    "cifar10_full": (4, 10, {"conv1": (32, 3, 5, 5), "conv3": (64, 32, 5, 5), "ip1": (10, 1024)}),
    "alexnet": (8, 1000, {"conv1": (96, 3, 11, 11), "conv2": (256, 48, 5, 5), "conv4": (384, 192, 3, 3),
                          "fc6": (4096, 9216)}),
    "vgg11": (11, 1000, {"conv1_1": (64, 3, 3, 3), "conv3_2": (256, 256, 3, 3), "conv5_2": (512, 512, 3, 3),
                         "fc6": (4096, 25088)}),
    "vgg16": (16, 1000, {"conv1_2": (64, 64, 3, 3), "conv4_3": (512, 512, 3, 3), "conv5_3": (512, 512, 3, 3),
                         "fc6": (4096, 25088), "fc7": (4096, 4096)}),
}
SCORES = {"lenet": "ip2", "cifar10_quick": "ip2", "cifar10_full": "ip1"}


def parse_net(text):
    net = caffe_pb2.NetParameter()
    text_format.Merge(text, net)
    return net


def parse_solver(text):
    solver = caffe_pb2.SolverParameter()
    text_format.Merge(text, solver)
    return solver


def data_layer(net, phase):
    (layer,) = [lay for lay in net.layer if lay.type in ("Data", "DummyData") and lay.include[0].phase == phase]
    return layer


def test_every_net_has_a_fact_row_and_template_files():
    assert sorted(templates.NETS) == sorted(FACTS)


@pytest.mark.caffe
@pytest.mark.parametrize("name", sorted(FACTS))
def test_dummy_net_trains_one_step_in_caffe(name, write):
    count, classes, shapes = FACTS[name]
    heavy = name.startswith("vgg") or name == "alexnet"
    batch = 1 if heavy else 2
    # Xavier keeps VGG's signal alive over 16 layers, so the first layer gets a gradient.
    extra = {"weight_filler": "xavier"} if name.startswith("vgg") else {}
    text = templates.render_net(name, dummy_data=True, train_batch_size=batch, test_batch_size=1, **extra)
    param = parse_net(text)
    assert {lay.type for lay in param.layer} >= {"DummyData", "SoftmaxWithLoss", "Accuracy"}
    assert not any(lay.type == "Data" for lay in param.layer)
    path = write(name + ".prototxt", text)
    scores = SCORES.get(name, "fc8")
    first = next(iter(shapes)) if name != "alexnet" else "conv1"

    net = caffe.Net(path, caffe.TRAIN)
    assert len(net.params) == count
    for layer, shape in shapes.items():
        assert net.params[layer][0].data.shape == shape, layer
    out = net.forward()
    assert net.blobs[scores].data.shape == (batch, classes)
    assert np.isfinite(out["loss"]) and out["loss"] > 0
    assert (net.blobs["label"].data == 0).all()
    net.backward()
    assert np.abs(net.params[scores][1].diff).sum() > 0
    assert np.abs(net.params[first][0].diff).sum() > 0
    del net

    net = caffe.Net(path, caffe.TEST)
    out = net.forward()
    assert set(out) == {"accuracy", "loss"}
    assert 0 <= out["accuracy"] <= 1
    assert net.blobs[scores].data.shape == (1, classes)


@pytest.mark.caffe
@pytest.mark.parametrize("name", sorted(FACTS))
def test_database_defaults_parse_with_caffe_pb2(name):
    net = parse_net(templates.render_net(name))
    defaults = templates.NETS[name].defaults
    train, test = data_layer(net, caffe_pb2.TRAIN), data_layer(net, caffe_pb2.TEST)
    assert (train.type, test.type) == ("Data", "Data")
    assert train.data_param.source == defaults["train_source"]
    assert test.data_param.source == defaults["test_source"]
    assert train.data_param.backend == caffe_pb2.DataParameter.LMDB
    assert (train.data_param.batch_size, test.data_param.batch_size) == (
        defaults["train_batch_size"], defaults["test_batch_size"])
    assert not test.transform_param.mirror
    assert train.transform_param.mirror == defaults["mirror"]


@pytest.mark.caffe
def test_stock_batch_sizes_crops_and_means():
    lenet = data_layer(parse_net(templates.render_net("lenet")), caffe_pb2.TRAIN)
    assert lenet.transform_param.scale == 1 / 256 and lenet.data_param.batch_size == 64
    alexnet = parse_net(templates.render_net("alexnet"))
    train, test = data_layer(alexnet, caffe_pb2.TRAIN), data_layer(alexnet, caffe_pb2.TEST)
    assert (train.data_param.batch_size, test.data_param.batch_size) == (256, 50)
    assert train.transform_param.crop_size == test.transform_param.crop_size == 227
    assert train.transform_param.mirror and train.transform_param.mean_file
    vgg = data_layer(parse_net(templates.render_net("vgg16", train_batch_size=32)), caffe_pb2.TRAIN)
    assert vgg.data_param.batch_size == 32 and vgg.transform_param.crop_size == 224
    assert list(vgg.transform_param.mean_value) == [104, 117, 123]


@pytest.mark.caffe
def test_layers_follow_the_reference_hyperparameters():
    full = {lay.name: lay for lay in parse_net(templates.render_net("cifar10_full")).layer}
    assert full["norm1"].lrn_param.norm_region == caffe_pb2.LRNParameter.WITHIN_CHANNEL
    assert full["norm1"].lrn_param.local_size == 3
    assert [p.decay_mult for p in full["ip1"].param] == [250, 0]
    assert full["pool2"].pooling_param.pool == caffe_pb2.PoolingParameter.AVE
    alexnet = {lay.name: lay for lay in parse_net(templates.render_net("alexnet")).layer}
    assert alexnet["fc6"].inner_product_param.weight_filler.std == pytest.approx(0.005)
    assert alexnet["conv2"].convolution_param.bias_filler.value == pytest.approx(0.1)
    assert alexnet["conv3"].convolution_param.bias_filler.value == 0
    assert alexnet["drop7"].dropout_param.dropout_ratio == 0.5
    lenet = {lay.name: lay for lay in parse_net(templates.render_net("lenet")).layer}
    assert [p.lr_mult for p in lenet["conv1"].param] == [1, 2]
    assert lenet["ip1"].inner_product_param.weight_filler.type == "xavier"


@pytest.mark.caffe
def test_vgg_names_and_filler_option():
    layers = parse_net(templates.render_net("vgg16", weight_filler="xavier")).layer
    convs = [lay.name for lay in layers if lay.type == "Convolution"]
    assert convs[:5] == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"] and convs[-1] == "conv5_3"
    assert {lay.convolution_param.weight_filler.type for lay in layers if lay.type == "Convolution"} == {"xavier"}
    gaussian = parse_net(templates.render_net("vgg11")).layer
    stds = [lay.convolution_param.weight_filler.std for lay in gaussian if lay.type == "Convolution"]
    assert stds == pytest.approx([0.01] * 8)


@pytest.mark.caffe
def test_vgg_config_variable_builds_any_column(write):
    text = templates.render_net("vgg11", config=[8, "M", 16, 16, "M"], crop_size=32, dummy_data=True,
                                train_batch_size=2, test_batch_size=2)
    net = caffe.Net(write("small.prototxt", text), caffe.TRAIN)
    assert list(net.params) == ["conv1_1", "conv2_1", "conv2_2", "fc6", "fc7", "fc8"]
    assert net.params["fc6"][0].data.shape == (4096, 16 * 8 * 8)
    assert net.blobs["data"].data.shape == (2, 3, 32, 32)


@pytest.mark.caffe
def test_database_net_reads_and_scales_images(tmp_path, write):
    images = np.arange(4 * 28 * 28).reshape(4, 1, 28, 28) % 256
    for split in ("train", "test"):
        with lmdb.open(str(tmp_path / split), map_size=1 << 24) as env, env.begin(write=True) as txn:
            for i, image in enumerate(images):
                datum = caffe_pb2.Datum(channels=1, height=28, width=28, label=i,
                                        data=image.astype(np.uint8).tobytes())
                txn.put(b"%08d" % i, datum.SerializeToString())
    text = templates.render_net("lenet", train_source=str(tmp_path / "train"), test_source=str(tmp_path / "test"),
                                train_batch_size=2, test_batch_size=4)
    net = caffe.Net(write("lenet.prototxt", text), caffe.TEST)
    net.forward()
    np.testing.assert_allclose(net.blobs["data"].data, images / 256.0, rtol=1e-6)
    assert list(net.blobs["label"].data) == [0, 1, 2, 3]


@pytest.mark.caffe
def test_mean_value_given_replaces_default_mean_file():
    given = data_layer(parse_net(templates.render_net("alexnet", mean_value=[104, 117, 123])), caffe_pb2.TRAIN)
    assert list(given.transform_param.mean_value) == [104, 117, 123]
    assert not given.transform_param.HasField("mean_file")
    single = data_layer(parse_net(templates.render_net("cifar10_quick", mean_value=128)), caffe_pb2.TEST)
    assert list(single.transform_param.mean_value) == [128]
    assert not single.transform_param.HasField("mean_file")
    back = data_layer(parse_net(templates.render_net("vgg16", mean_file="mean.binaryproto")), caffe_pb2.TRAIN)
    assert back.transform_param.mean_file == "mean.binaryproto" and not back.transform_param.mean_value


def test_both_means_given_is_an_error():
    with pytest.raises(ConfigError, match='template "alexnet": give mean_file or mean_value, not both; '
                                          'got mean_file "m.binaryproto" and mean_value 104; '):
        templates.render_net("alexnet", mean_file="m.binaryproto", mean_value=104)


# (lr_policy, base_lr, weight_decay, test_interval, default max_iter, snapshot)
SOLVER_FACTS = {
    "lenet": ("inv", 0.01, 0.0005, 500, 10000, 5000),
    "cifar10_quick": ("fixed", 0.001, 0.004, 500, 4000, 4000),
    "cifar10_full": ("fixed", 0.001, 0.004, 1000, 60000, 10000),
    "alexnet": ("step", 0.01, 0.0005, 1000, 450000, 10000),
    "vgg11": ("step", 0.01, 0.0005, 1000, 370000, 10000),
    "vgg16": ("step", 0.01, 0.0005, 1000, 370000, 10000),
}


@pytest.mark.caffe
@pytest.mark.parametrize("name", sorted(SOLVER_FACTS))
def test_solver_renders_and_parses(name):
    policy, base_lr, decay, interval, max_iter, snapshot = SOLVER_FACTS[name]
    solver = parse_solver(templates.render_solver(name))
    assert (solver.lr_policy, solver.test_interval, solver.max_iter, solver.snapshot) == (
        policy, interval, max_iter, snapshot)
    assert solver.base_lr == pytest.approx(base_lr) and solver.weight_decay == pytest.approx(decay)
    assert solver.momentum == pytest.approx(0.9)
    assert solver.net == name + "_train_test.prototxt" and solver.solver_mode == caffe_pb2.SolverParameter.CPU
    given = parse_solver(templates.render_solver(name, net="/tmp/x y/net.prototxt", snapshot_prefix="snap/it",
                                                 max_iter=7, solver_mode="GPU"))
    assert (given.net, given.snapshot_prefix, given.max_iter) == ("/tmp/x y/net.prototxt", "snap/it", 7)
    assert given.solver_mode == caffe_pb2.SolverParameter.GPU


@pytest.mark.caffe
def test_solver_and_net_train_together(tmp_path, write):
    net = write("lenet.prototxt", templates.render_net("lenet", dummy_data=True, train_batch_size=2,
                                                       test_batch_size=1))
    prefix = str(tmp_path / "lenet")
    solver = caffe.SGDSolver(write("solver.prototxt", templates.render_solver(
        "lenet", net=net, max_iter=3, snapshot_prefix=prefix)))
    solver.solve()
    assert solver.iter == 3
    assert (tmp_path / "lenet_iter_3.caffemodel").is_file()
    assert (tmp_path / "lenet_iter_3.solverstate").is_file()


@pytest.mark.caffe
def test_schedules_of_lenet_and_alexnet():
    lenet = parse_solver(templates.render_solver("lenet"))
    assert (lenet.gamma, lenet.power, lenet.test_iter) == (pytest.approx(0.0001), 0.75, [100])
    alexnet = parse_solver(templates.render_solver("alexnet"))
    assert (alexnet.stepsize, alexnet.gamma, alexnet.test_iter) == (100000, pytest.approx(0.1), [1000])


def test_every_default_is_a_template_variable_and_every_variable_has_a_default():
    for name, entry in templates.NETS.items():
        assert templates.template_variables(entry.net) == set(entry.defaults), name
        assert templates.template_variables(entry.solver) == set(entry.solver_defaults), name


def test_missing_variable_names_it(monkeypatch):
    entry = templates.NETS["lenet"]
    defaults = {k: v for k, v in entry.defaults.items() if k != "train_source"}
    monkeypatch.setitem(templates.NETS, "lenet", entry._replace(defaults=defaults))
    with pytest.raises(ConfigError) as error:
        templates.render_net("lenet")
    assert str(error.value) == ('template "lenet" needs variable "train_source"; '
                                'give it with --set train_source=VALUE')
    # DummyData reads no database, so it needs no source.
    assert "DummyData" in templates.render_net("lenet", dummy_data=True)
    solver = entry.solver_defaults
    monkeypatch.setitem(templates.NETS, "lenet", entry._replace(
        solver_defaults={k: v for k, v in solver.items() if k != "net"}))
    with pytest.raises(ConfigError, match='^solver of template "lenet" needs variable "net"; give it with --set'):
        templates.render_solver("lenet")


def test_unknown_template_lists_names_and_near_matches():
    with pytest.raises(ConfigError) as error:
        templates.render_net("vgg_16")
    assert str(error.value) == ('unknown template "vgg_16" (did you mean "vgg16" or "vgg11"?); choose one of '
                                'alexnet, cifar10_full, cifar10_quick, lenet, vgg11, vgg16')
    with pytest.raises(ConfigError, match=r'^unknown template "inception"; choose one of alexnet, '):
        templates.render_solver("inception")


def test_unknown_variable_lists_the_templates_variables():
    with pytest.raises(ConfigError) as error:
        templates.render_net("lenet", batch_size=32)
    message = str(error.value)
    assert message.startswith('template "lenet" has no variable "batch_size" (did you mean "')
    assert message.endswith("its variables: backend, crop_size, dropout_ratio, dummy_data, image_shape, mean_file, "
                            "mean_value, mirror, scale, test_batch_size, test_source, train_batch_size, train_source, "
                            "widths")
    with pytest.raises(ConfigError, match=r'^template "lenet" has no variable "config"; its variables: '):
        templates.render_net("lenet", config=[64, "M"])
    with pytest.raises(ConfigError, match='its variables: max_iter, net, snapshot_prefix, solver_mode$'):
        templates.render_solver("alexnet", base_lr=0.1)


@pytest.mark.parametrize("variable, value, rule", [
    ("train_batch_size", 0, "an integer >= 1, got 0"),
    ("dummy_data", "yes", 'true or false, got "yes"'),
    ("backend", "lmdb", 'one of "LMDB", "LEVELDB", got "lmdb"'),
    ("config", [64, "P"], 'a list of conv widths'),
    ("weight_filler", "msra", 'one of "gaussian", "xavier", got "msra"'),
    ("crop_size", 2.5, "an integer >= 1 or null, got 2.5"),
])
def test_bad_values_are_refused(variable, value, rule):
    with pytest.raises(ConfigError) as error:
        templates.render_net("vgg11", **{variable: value})
    message = str(error.value)
    assert message.startswith('template "vgg11": variable "%s" must be %s' % (variable, rule))
    assert message.endswith("give it with --set %s=VALUE" % variable)


@pytest.mark.caffe
def test_lenet_widths_make_a_thin_lenet():
    """Issue 16: the thin LeNet that --widen grows back to Caffe's widths."""
    thin = {lay.name: lay for lay in parse_net(templates.render_net("lenet", widths=[10, 25, 250])).layer}
    assert [thin[n].convolution_param.num_output for n in ("conv1", "conv2")] == [10, 25]
    assert thin["ip1"].inner_product_param.num_output == 250
    with pytest.raises(ConfigError, match=r'variable "widths" must be a list of 3 integers >= 1 \(the outputs of '
                                          r'conv1, conv2 and ip1\), got \[10, 25\]; give it with --set widths=VALUE'):
        templates.render_net("lenet", widths=[10, 25])


def test_bad_solver_mode_is_refused():
    with pytest.raises(ConfigError, match='variable "solver_mode" must be one of "CPU", "GPU", got "cpu"'):
        templates.render_solver("lenet", solver_mode="cpu")


def test_parse_value_reads_json_else_text():
    assert templates.parse_value("32") == 32
    assert templates.parse_value("true") is True
    assert templates.parse_value("null") is None
    assert templates.parse_value('[64, "M"]') == [64, "M"]
    assert templates.parse_value("examples/mnist/mnist_train_lmdb") == "examples/mnist/mnist_train_lmdb"


@pytest.mark.caffe
def test_strings_are_escaped_for_protobuf():
    path = 'data/with "quotes" and \\ back'
    assert data_layer(parse_net(templates.render_net("lenet", train_source=path)),
                      caffe_pb2.TRAIN).data_param.source == path


def test_import_does_not_load_jinja2():
    code = "import sys, dropin_caffe.netgen.templates; print('jinja2' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.caffe
@pytest.mark.parametrize("name, variables, expected", [
    ("lenet", {}, (1, 28, 28)),
    ("cifar10_quick", {}, (3, 32, 32)),
    ("alexnet", {}, (3, 227, 227)),
    ("vgg16", {"crop_size": 112}, (3, 112, 112)),
    ("lenet", {"image_shape": [3, 40, 36]}, (3, 40, 36)),
])
def test_data_shape_is_the_cropped_image_shape_and_matches_dummy_data(name, variables, expected):
    assert templates.data_shape(name, **variables) == expected
    net = caffe_pb2.NetParameter()
    text_format.Merge(templates.render_net(name, dummy_data=True, **variables), net)
    dims = tuple(net.layer[0].dummy_data_param.shape[0].dim)
    assert dims[1:] == expected
