"""Expanded nets in Caffe: every caffe-doc net with several rewrites, every preset and template,
built by caffe.Net in TRAIN and TEST, one forward and backward, inferred shapes equal Caffe's."""
import pytest

from conftest import ODD_HEAD, ODD_NETS
from dropin_caffe.errors import ConfigError
from dropin_caffe.netgen import plan as plans
from dropin_caffe.netgen import prototxt, rewrite, shapes, templates, validate
from dropin_caffe.netgen.expand import expand_net
from dropin_caffe.netgen.upgrade import upgrade_net
from dropin_caffe.netgen.vocabulary import WEIGHT_TYPES

DOC = "/usr/share/doc/caffe-doc/"


def apply(net, plan, input_shapes=None):
    """`plan` applied to `net`: (expanded net, notes)."""
    return plans.apply_plan(net, plan, 1, input_shapes)[:2]

# (file, data shapes (small batches), plan) -- the data shapes are facts of the datasets.
CASES = [
    ("examples/mnist/lenet_train_test.prototxt", {"data": (4, 1, 28, 28)},
     plans.Plan(replicate=[("conv1", 2), ("ip1", 1)], length=100, p_top=True)),
    ("examples/mnist/lenet_train_test.prototxt", {"data": (4, 1, 28, 28)},
     plans.Plan(replicate=[("conv2", 3)], dropin=False, kernel=3, activation="ReLU")),
    ("examples/cifar10/cifar10_quick_train_test.prototxt", {"data": (4, 3, 32, 32)},
     plans.Plan(replicate=[("conv2", 2), ("conv3", 1)], length=50, stagger=20, activation="ReLU")),
    ("examples/cifar10/cifar10_full_train_test.prototxt", {"data": (4, 3, 32, 32)},
     plans.Plan(replicate=[("conv1", 1), ("conv3", 2)], length=50)),
    ("models/bvlc_alexnet/train_val.prototxt.gz", {"data": (2, 3, 227, 227)},
     plans.Plan(replicate=[("conv3", 2), ("conv5", 1)], regularize=[("drop6", (0.5, None))], length=1000)),
    ("models/bvlc_reference_caffenet/train_val.prototxt.gz", {"data": (2, 3, 227, 227)},
     plans.Plan(replicate=[("conv1", 1), ("conv4", 1)], regularize=[("drop7", (0.4, None))], kernel=3, length=1000)),
    ("models/bvlc_googlenet/train_val.prototxt.gz", {"data": (2, 3, 224, 224)},
     plans.Plan(replicate=[("conv2/3x3", 1), ("inception_5b/1x1", 1)], length=1000)),
    ("examples/siamese/mnist_siamese_train_test.prototxt", {"pair_data": (4, 2, 28, 28)},
     plans.Plan(replicate=[("conv2", 1), ("conv2_p", 1)], length=100)),
]


@pytest.mark.caffe
@pytest.mark.parametrize("path,data,plan", CASES, ids=["%s-%d" % (c[0].split("/")[-2], i) for i, c in enumerate(CASES)])
def test_caffe_doc_net_expands_and_runs_in_caffe(path, data, plan):
    net = upgrade_net(prototxt.read(DOC + path))
    expanded, _ = apply(net, plan, data)
    text = prototxt.dumps(expanded)
    assert prototxt.check_with_caffe_pb2(text, "net")
    for phase in ("TRAIN", "TEST"):
        found = validate.check_net(expanded, phase, data)  # forward, backward, shapes == Caffe's
        for name, count in plan.replicate:
            top = (plan.names.get(name) or ["%s_%d" % (name, count)])[-1]
            original_top = next(one.get("top") for one in expanded.get_all("layer") if one.get("name") == name)
            assert found[top] == found[original_top]
    joins = [layer for layer in expanded.get_all("layer") if layer.get("type") == "Python"]
    expected = sum(count for _, count in plan.replicate) * plan.dropin + len(plan.regularize)
    assert len(joins) >= expected


@pytest.mark.caffe
@pytest.mark.parametrize("preset", sorted(plans.PRESETS))
def test_presets_run_in_caffe(preset):
    template, plan = plans.preset_plan(preset)
    net = prototxt.parse(templates.render_net(template, dummy_data=True, train_batch_size=1, test_batch_size=1))
    expanded, _ = apply(net, plan)
    _, rows = shapes.infer(expanded)
    weights = sum(1 for row in rows if row.type in WEIGHT_TYPES)
    assert weights == {"lenet-deep": 9, "cifar10-11": 11, "alexnet-13": 13, "vgg16-dropin": 16}[preset]
    dropins = [c for _, c in rewrite.dropin_configs(expanded)]
    assert len(dropins) == sum(count for _, count in plan.replicate)
    for phase in ("TRAIN", "TEST"):
        validate.check_net(expanded, phase)


def test_vgg16_dropin_is_vgg16_once_the_layers_are_in():
    """The preset's replicas land exactly where VGG-D's extra layers are, with VGG-D's names and shapes."""
    _, plan = plans.preset_plan("vgg16-dropin")
    plan.dropin = False
    vgg11 = prototxt.parse(templates.render_net("vgg11", dummy_data=True))
    vgg16 = prototxt.parse(templates.render_net("vgg16", dummy_data=True))
    plain, _ = apply(vgg11, plan)

    def convs(net):
        return [(r.name, r.tops[0][1], r.params) for r in shapes.infer(net)[1] if r.type == "Convolution"]
    assert convs(plain) == convs(vgg16)


def test_lenet_deep_depth_and_fillers():
    _, plan = plans.preset_plan("lenet-deep", depth=10)
    net = prototxt.parse(templates.render_net("lenet", dummy_data=True))
    expanded, _ = apply(net, plan)
    weight_layers = [one for one in expanded.get_all("layer") if one.get("type") in WEIGHT_TYPES]
    assert len(weight_layers) == 14
    for layer in weight_layers:  # the added layers gaussian std 0.01 (our choice), LeNet's own xavier
        param = layer.get("convolution_param") or layer.get("inner_product_param")
        added = layer.get("name").startswith("conv2_")
        assert param.get("weight_filler") == prototxt.parse('type: "gaussian" std: 0.01' if added else 'type: "xavier"')
        if added:
            assert (param.get("kernel_size"), param.get("pad")) == (3, 1)
    with pytest.raises(ConfigError, match="--depth applies to the lenet-deep preset only"):
        expand_net(preset="cifar10-11", depth=3)


@pytest.mark.caffe
def test_lenet_deep_width_sets_conv2_and_its_replicas_channels(tmp_path):
    """--width C: conv2 and every added layer have C channels, ip1 reads 4*4*C values; Caffe builds it
    (expand_net validates in Caffe) and its weight blobs have those shapes."""
    import caffe

    expansion = expand_net(preset="lenet-deep", depth=3, width=8, settings={"dummy_data": True, "train_batch_size": 2,
                                                                            "test_batch_size": 2})
    found = expansion.shapes["TRAIN"]
    assert [found[b] for b in ("conv2", "conv2_1", "conv2_3", "conv2_3_dropin", "pool2")] == \
        [(2, 8, 8, 8)] * 4 + [(2, 8, 4, 4)]
    rows = {row.layer: row for row in expansion.rows}
    assert rows["ip1"].params == 500 * 4 * 4 * 8 + 500 and rows["conv2_2"].params == 8 * 8 * 3 * 3 + 8
    path = str(tmp_path / "deep.prototxt")
    prototxt.write(path, expansion.net)
    net = caffe.Net(path, caffe.TRAIN)
    assert net.params["conv2"][0].data.shape == (8, 20, 5, 5)
    assert [net.params["conv2_%d" % i][0].data.shape for i in (1, 2, 3)] == [(8, 8, 3, 3)] * 3
    assert net.params["ip1"][0].data.shape == (500, 128)
    assert expand_net(preset="lenet-deep", depth=1, validate=False).shapes["TRAIN"]["conv2_1"][1] == 50  # default
    with pytest.raises(ConfigError, match=r"^--width must be an integer >= 1 \(channels of conv2 and the added "
                                          r"layers\), got 0$"):
        expand_net(preset="lenet-deep", width=0)
    with pytest.raises(ConfigError, match="^--width applies to the lenet-deep preset only$"):
        expand_net(preset="alexnet-13", width=8)


@pytest.mark.caffe
def test_lenet_deep_at_depth_100_joins_every_layer_in_turn_and_builds_in_caffe():
    """100 added layers, staggered with tailored lengths: names, the chain of joins (DropIn i joins
    DropIn i-1's output, prev, with replica i's ReLU output, new), shapes, and Caffe's own check."""
    expansion = expand_net(preset="lenet-deep", depth=100, width=4, dropin_length=50, stagger=5, length_growth=1.01,
                           settings={"dummy_data": True, "train_batch_size": 1, "test_batch_size": 1})
    layers = {layer.get("name"): layer for layer in expansion.net.get_all("layer")}
    configs = rewrite.dropin_configs(expansion.net)
    assert [layer.get("name") for layer, _ in configs] == ["conv2_%d_dropin" % i for i in range(1, 101)]
    for i, (join, config) in enumerate(configs, 1):
        prev = "conv2" if i == 1 else "conv2_%d_dropin" % (i - 1)
        assert join.get_all("bottom") == [prev, "conv2_%d" % i]
        assert layers["conv2_%d" % i].get("bottom") == prev
        assert layers["conv2_%d_relu" % i].get_all("top") == ["conv2_%d" % i]
        assert (config["start"], config["length"]) == (5 * (i - 1), round(50 * 1.01 ** (i - 1)))
        assert expansion.shapes["TRAIN"]["conv2_%d_dropin" % i] == (1, 4, 8, 8)
    assert layers["pool2"].get("bottom") == "conv2_100_dropin"
    assert expansion.expanded.weight_layers == 104


def test_expand_needs_a_length_for_dropin():
    net = prototxt.parse(templates.render_net("lenet", dummy_data=True))
    with pytest.raises(ConfigError, match="^gradual DropIn needs --dropin-length L, the iterations a new layer takes "
                                          r"to enter \(an integer >= 1, e.g. 1000\); or pass --no-dropin"):
        apply(net, plans.Plan(replicate=[("conv2", 1)]))  # issue 22.12: no "got None"
    with pytest.raises(ConfigError, match="--dropin-length L must be an integer >= 1 .*, got 0;"):
        expand_net(net, replicate={"conv2": 1}, dropin_length=0)
    expanded, _ = apply(net, plans.Plan(replicate=[("conv2", 1)], dropin=False))
    assert plans.Plan(replicate=[("conv2", 1)], dropin=False).suffix == "plain"


def test_summary_marks_joins_and_totals_both_nets():
    result = expand_net(templates.render_net("lenet", dummy_data=True), replicate={"conv2": 2}, dropin_length=10,
                        validate=False)
    table = result.table.splitlines()
    assert table[0].split() == ["layer", "type", "output", "(TRAIN)", "params"]
    rows = {line.split()[0]: line.split() for line in table[1:-1]}
    assert rows["*conv2_1_dropin"][1:] == ["DropIn", "64x50x8x8", "2"]
    assert rows["conv2_1"][1:] == ["Convolution", "64x50x8x8", "62,550"]  # 50 * 50 * 5 * 5 + 50
    assert table[-1] == ("original: 4 weight layers, 431,080 parameters; expanded: 6 weight layers, "
                         "556,180 parameters, 2 DropIn/Resize layers (*)")


@pytest.mark.caffe
def test_a_trained_net_patched_deeper_keeps_its_weights(tmp_path):
    """`caffe train --weights=ORIGINAL.caffemodel` on the expanded net starts the original layers
    from the trained model and the replicas from their fillers."""
    import os
    import subprocess

    import caffe
    import numpy as np

    from dropin_caffe.cli import expand_net as cli

    net_path, solver_path = str(tmp_path / "lenet.prototxt"), str(tmp_path / "lenet_solver.prototxt")
    with open(net_path, "w") as f:
        f.write(templates.render_net("lenet", dummy_data=True, train_batch_size=8, test_batch_size=8))
    with open(solver_path, "w") as f:
        f.write(templates.render_solver("lenet", net=net_path, max_iter=5,
                                        snapshot_prefix=str(tmp_path / "lenet")))
    environ = dict(os.environ, GLOG_minloglevel="1")
    subprocess.run(["caffe", "train", "--solver=" + solver_path], check=True, env=environ,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    trained = str(tmp_path / "lenet_iter_5.caffemodel")
    out = str(tmp_path / "out")
    assert cli.main([net_path, "--replicate", "conv2=2", "--dropin-length", "10", "--solver", solver_path,
                            "--max-iter", "2", "-o", out, "-q"]) == 0
    expanded_solver = os.path.join(out, "lenet_solver_dropin.prototxt")
    done = subprocess.run(["caffe", "train", "--solver=" + expanded_solver, "--weights=" + trained],
                          env=dict(environ, GLOG_minloglevel="0"), stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, universal_newlines=True)
    assert done.returncode == 0, done.stdout[-2000:]
    assert os.path.exists(str(tmp_path / "lenet_dropin_iter_2.caffemodel"))  # not the original's prefix
    original = caffe.Net(net_path, caffe.TEST, weights=trained)
    patched = caffe.Net(os.path.join(out, "lenet_dropin.prototxt"), caffe.TEST, weights=trained)
    for name in ("conv1", "conv2", "ip1", "ip2"):
        for mine, theirs in zip(patched.params[name], original.params[name]):
            assert np.array_equal(mine.data, theirs.data)
    fresh = patched.params["conv2_1"][0].data  # xavier over fan-in 50 * 5 * 5: std sqrt(1 / 1250)
    assert fresh.shape == (50, 50, 5, 5)
    assert abs(fresh.std() - np.sqrt(1 / 1250)) < 0.05 * np.sqrt(1 / 1250)


@pytest.mark.parametrize("body, message", ODD_NETS, ids=[body[:30] for body, _ in ODD_NETS])
def test_expand_net_refuses_structurally_odd_nets_in_one_line(body, message):
    with pytest.raises(ConfigError) as info:
        expand_net(ODD_HEAD + body, replicate={"conv1": 1}, dropin_length=100, validate=False)
    assert str(info.value).startswith(message) and "\n" not in str(info.value)


def test_expand_net_counts_nameless_layers_from_the_users_first():
    text = 'input: "data"\ninput_shape { dim: 1 dim: 3 dim: 8 dim: 8 }\nlayer { include: "pool2" }\n'
    with pytest.raises(ConfigError, match='^layer #1: "include" must be a message'):
        expand_net(text, replicate={"conv1": 1}, dropin_length=100, validate=False)


@pytest.mark.parametrize("std", [-1, 0, 0.0, float("nan"), float("inf"), True, "0.01"])
def test_expand_net_refuses_a_replica_std_caffe_would_abort_on(std):
    text = ODD_HEAD + 'layer { name: "relu" type: "ReLU" bottom: "conv1" top: "conv1" }\n'
    with pytest.raises(ConfigError, match=r"^--replica-std STD, the std of the replicas' gaussian weights, must be a "
                                          r"finite number > 0 \(e\.g\. 0\.01\), got "):
        expand_net(text, replicate={"conv1": 1}, dropin_length=100, replica_std=std, validate=False)


def test_expand_net_takes_a_positive_replica_std():
    expansion = expand_net(ODD_HEAD, replicate={"conv1": 1}, dropin_length=100, replica_std=0.5, validate=False)
    assert "std: 0.5" in expansion.net_text
