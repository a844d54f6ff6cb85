"""The rewrites on prototxt trees: replicas, their wiring and DropIn joins, regularizing DropIn, stagger."""
import json
import re

import numpy
import pytest

from conftest import HAS_CAFFE, input_layer
from dropin_caffe.errors import ConfigError
from dropin_caffe.netgen import plan as plans
from dropin_caffe.netgen import prototxt, rewrite, shapes, validate

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe

NET = """
name: "small"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 12 dim: 12 } } }
layer { name: "label" type: "Input" top: "label" input_param { shape { dim: 2 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  param { name: "conv1_w" lr_mult: 1 } param { lr_mult: 2 }
  convolution_param { num_output: 6 kernel_size: 5 stride: 2 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
  pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "ip1" type: "InnerProduct" bottom: "pool1" top: "ip1" inner_product_param { num_output: 8 } }
layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.5 } }
layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2" inner_product_param { num_output: 3 } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy" }
"""


@pytest.fixture
def net():
    return prototxt.parse(NET)


def layer(net, name):
    return next(one for one in rewrite.layers(net) if one.get("name") == name)


def names(net):
    return [one.get("name") for one in rewrite.layers(net)]


def config(net, name):
    return json.loads(layer(net, name).get("python_param").get("param_str"))


def replicate(net, name, count, dropin=None, **options):
    """rewrite.replicate with the same DropIn config for every replica, the net's shapes inferred."""
    return rewrite.replicate(net, name, count, None if dropin is None else [dropin] * count, shapes.infer(net),
                             **options)


def regularize(net, name, p_new, iter_size=1, **options):
    """rewrite.regularize with a regularizing DropIn of probability `p_new`, the net's shapes inferred."""
    dropin = {"mode": "regularize", "p_new": p_new, "iter_size": iter_size}
    return rewrite.regularize(net, name, dropin, shapes.infer(net), **options)


def test_replicas_are_chained_by_dropin_and_consumers_read_the_last_join(net):
    notices = []
    replicate(net, "conv1", 2, dropin={"length": 100, "iter_size": 2}, notices=notices)
    assert names(net)[2:10] == ["conv1", "relu1", "conv1_1", "conv1_1_relu", "conv1_1_dropin",
                                "conv1_2", "conv1_2_relu", "conv1_2_dropin"]
    assert layer(net, "conv1_1").get_all("bottom") == ["conv1"]
    assert layer(net, "conv1_1_dropin").get_all("bottom") == ["conv1", "conv1_1"]
    assert layer(net, "conv1_2").get_all("bottom") == ["conv1_1_dropin"]
    assert layer(net, "conv1_2_dropin").get_all("bottom") == ["conv1_1_dropin", "conv1_2"]
    assert layer(net, "pool1").get_all("bottom") == ["conv1_2_dropin"]
    assert config(net, "conv1_2_dropin") == {"name": "conv1_2_dropin", "length": 100, "iter_size": 2}
    frozen = layer(net, "conv1_1_dropin").get("param")
    assert (frozen.get("lr_mult"), frozen.get("decay_mult")) == (0, 0)
    assert notices == ['replicas of conv1 use stride 1 and "same" padding so that they keep the blob\'s shape']
    found, _ = shapes.infer(net)
    assert found["conv1_1"] == found["conv1_2_dropin"] == found["conv1"] == (2, 6, 4, 4)


def test_replica_is_a_fresh_shape_preserving_copy(net):
    replicate(net, "conv1", 1, dropin={"length": 10})
    replica = layer(net, "conv1_1")
    param = replica.get("convolution_param")
    assert (param.get("num_output"), param.get("kernel_size"), param.get("pad")) == (6, 5, 2)
    assert "stride" not in param
    assert param.get("weight_filler").get("type") == "xavier"
    assert [spec.get("name") for spec in replica.get_all("param")] == [None, None]  # no weight sharing
    assert [spec.get("lr_mult") for spec in replica.get_all("param")] == [1, 2]
    original = layer(net, "conv1").get("convolution_param")
    assert (original.get("stride"), original.get("pad")) == (2, None)  # the original keeps its name and shape


def test_plain_replicas_are_chained_directly(net):
    replicate(net, "conv1", 2, dropin=None)
    assert "Python" not in [one.get("type") for one in rewrite.layers(net)]
    assert layer(net, "conv1_2").get_all("bottom") == ["conv1_1"]
    assert layer(net, "pool1").get_all("bottom") == ["conv1_2"]


def test_inner_product_replica_activation_kernel_and_filler_overrides(net):
    replicate(net, "ip2", 1, dropin={"length": 5}, activation="ReLU")
    assert names(net)[-6:] == ["ip2", "ip2_1", "ip2_1_relu", "ip2_1_dropin", "loss", "accuracy"]
    assert layer(net, "ip2_1_relu").get("type") == "ReLU"
    assert layer(net, "loss").get_all("bottom") == ["ip2_1_dropin", "label"]
    assert layer(net, "accuracy").get_all("bottom") == ["ip2_1_dropin", "label"]
    other = prototxt.parse(NET)
    replicate(other, "conv1", 1, dropin=None, activation="ReLU", kernel=3, filler=rewrite.gaussian_filler(0.01))
    param = layer(other, "conv1_1").get("convolution_param")
    assert (param.get("kernel_size"), param.get("pad")) == (3, 1)
    assert param.get("weight_filler") == prototxt.parse('type: "gaussian" std: 0.01')
    assert [one.get("type") for one in rewrite.layers(other)].count("ReLU") == 2  # relu1 copied, none added


def test_explicit_names_and_p_top(net):
    replicate(net, "conv1", 1, dropin={"length": 5}, names=["conv1b"], p_top=True)
    join = layer(net, "conv1b_dropin")
    assert join.get_all("top") == ["conv1b_dropin", "conv1b_dropin_p"]
    assert join.get_all("loss_weight") == [0, 0]


@pytest.mark.parametrize("name,count,message", [
    ("data", 1, "--replicate data: Input is a data layer"),
    ("loss", 1, "--replicate loss: SoftmaxWithLoss is a loss or accuracy layer"),
    ("accuracy", 1, "--replicate accuracy: Accuracy is a loss or accuracy layer"),
    ("conv11", 1, "--replicate: no layer named 'conv11' in the net; did you mean conv1"),
    ("pool1", 1, "a Pooling layer maps (2, 6, 4, 4) to (2, 6, 2, 2), so a replica of it cannot take its own output"),
])
def test_replicate_errors(net, name, count, message):
    with pytest.raises(ConfigError) as error:
        replicate(net, name, count, dropin={"length": 5})
    assert message in str(error.value)


def test_replicate_refuses_an_even_kernel_and_a_taken_name(net):
    with pytest.raises(ConfigError, match=r"even or missing kernel size \(\[4, 4\]\).*--replica-kernel 3"):
        replicate(net, "conv1", 1, kernel=4)
    with pytest.raises(ConfigError, match="the new name 'pool1' is already used"):
        replicate(prototxt.parse(NET), "conv1", 1, names=["pool1"])


def test_an_in_place_element_wise_layer_may_be_replicated(net):
    replicate(net, "relu1", 1, dropin={"length": 3})
    assert layer(net, "relu1_1").get_all("bottom") == ["conv1"]


def test_regularize_flattens_and_resizes_prev_and_rewires(net):
    notices = []
    regularize(net, "drop1", 0.7, iter_size=3, notices=notices)
    assert "drop1" not in names(net)
    assert names(net)[names(net).index("ip1") + 1:names(net).index("ip2")] == [
        "pool1_flat", "pool1_flat_resized", "drop1_dropin"]
    assert layer(net, "pool1_flat_resized").get("python_param").get("param_str") == \
        '{"name": "pool1_flat_resized", "channels": 8}'
    join = layer(net, "drop1_dropin")
    assert join.get_all("bottom") == ["pool1_flat_resized", "ip1"]
    assert config(net, "drop1_dropin") == {"name": "drop1_dropin", "mode": "regularize", "p_new": 0.7, "iter_size": 3}
    assert layer(net, "ip2").get_all("bottom") == ["drop1_dropin"]
    assert "resized to (2, 8)" in notices[0]
    assert shapes.infer(net)[0]["drop1_dropin"] == (2, 8)


def test_regularize_errors(net):
    with pytest.raises(ConfigError, match="needs a Dropout layer, ip1 is a InnerProduct layer"):
        regularize(net, "ip1", 0.5)
    with pytest.raises(ConfigError, match="no layer named 'drop2' in the net; did you mean drop1"):
        regularize(net, "drop2", 0.5)


def joined(net, **plan):
    """The DropIn configs, in net order, of `net` expanded by a Plan of `plan`."""
    expanded, _, _ = plans.apply_plan(net, plans.Plan(**plan))
    return [c for _, c in rewrite.dropin_configs(expanded)]


def test_stagger_sets_each_gradual_join_to_start_in_turn(net):
    configs = joined(net, replicate=[("conv1", 3)], regularize=[("drop1", (0.5, None))], length=10, stagger=40)
    assert [c.get("start") for c in configs] == [0, 40, 80, None]  # the regularizing DropIn has no schedule


def test_tailored_lengths_grow_by_the_factor_and_leave_starts_to_stagger(net):
    configs = joined(net, replicate=[("conv1", 4)], regularize=[("drop1", (0.5, None))], length=10,
                     length_growth=1.5, stagger=7)
    assert [(c.get("length"), c.get("start")) for c in configs] == [(10, 0), (15, 7), (22, 14), (34, 21), (None, None)]
    shrinking = joined(net, replicate=[("conv1", 4)], length=2, length_growth=0.1)  # lengths stop at 1 iteration
    assert [c.get("length") for c in shrinking] == [2, 1, 1, 1]


def test_joins_are_numbered_in_net_order_whatever_the_order_given(net):
    """Seeds follow the layers' order in the net, not the options' order: ip1's replica after conv1's."""
    configs = joined(net, replicate=[("ip1", 1), ("conv1", 2)], length=10, stagger=5, dropin_seed=3)
    assert [(c["name"], c["start"], c["seed"]) for c in configs] == [
        ("conv1_1_dropin", 0, 3000), ("conv1_2_dropin", 5, 3001), ("ip1_1_dropin", 10, 3002)]


def test_regularize_flattens_without_a_resize_when_the_flat_size_already_matches():
    net = prototxt.parse(NET.replace("inner_product_param { num_output: 8 }", "inner_product_param { num_output: 24 }"))
    regularize(net, "drop1", 0.5)  # pool1 is 6x2x2 = 24 values a sample
    assert names(net)[names(net).index("ip1") + 1:names(net).index("ip2")] == ["pool1_flat", "drop1_dropin"]
    assert layer(net, "drop1_dropin").get_all("bottom") == ["pool1_flat", "ip1"]
    assert shapes.infer(net)[0]["drop1_dropin"] == (2, 24)


# ---------------------------------------------------------------------------------------------
# Nets users bring (issue 8): deploy nets, separate-top followers, joins


# A deploy-style unit: no weight filler, BatchNorm with global statistics, all in place.
DEPLOY = input_layer("data", (2, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1" batch_norm_param { use_global_stats: true } }
layer { name: "scale1" type: "Scale" bottom: "conv1" top: "conv1" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 3 } }
"""


@pytest.mark.caffe
def test_replicas_of_a_layer_without_weight_filler_get_a_live_one():
    """Issue 8.4: Caffe's default filler (constant 0) would make a replica output 0 and never learn."""
    net, notices = prototxt.parse(DEPLOY), []
    replicate(net, "conv1", 1, dropin=None, notices=notices)
    replicate(net, "fc", 1, dropin=None, notices=notices)
    assert layer(net, "conv1_1").get("convolution_param").get("weight_filler") == prototxt.parse('type: "msra"')
    assert layer(net, "fc_1").get("inner_product_param").get("weight_filler") == prototxt.parse('type: "xavier"')
    assert "replicas of conv1 get weight_filler msra: conv1 has none (Caffe's default, constant 0, would make " \
           "them output 0 and never learn); --replica-std STD gives gaussian weights instead" in notices
    caffe_net = validate.load_net(net, "TRAIN")
    rng = numpy.random.default_rng(0)
    for blob in (caffe_net.blobs["data"], caffe_net.params["conv1"][0]):  # an image, and the trained original
        blob.data[...] = rng.normal(size=blob.data.shape)
    caffe_net.forward()
    assert caffe_net.params["conv1_1"][0].data.std() > 0.1 and abs(caffe_net.blobs["conv1_1"].data).max() > 0
    assert caffe_net.params["fc_1"][0].data.std() > 0.1
    other = prototxt.parse(DEPLOY)  # --replica-std wins
    replicate(other, "conv1", 1, filler=rewrite.gaussian_filler(0.02))
    assert layer(other, "conv1_1").get("convolution_param").get("weight_filler").get("std") == 0.02


@pytest.mark.caffe
def test_copied_batch_norm_trains_its_statistics():
    """Issue 8.5: a replica's BatchNorm must not keep the deploy net's use_global_stats: true."""
    net, notices = prototxt.parse(DEPLOY), []
    replicate(net, "conv1", 1, dropin={"length": 10}, notices=notices)
    assert "use_global_stats" not in layer(net, "conv1_1_batchnorm").get("batch_norm_param")
    assert layer(net, "bn1").get("batch_norm_param").get("use_global_stats") is True  # the original is as it was
    assert "replicas of conv1 train their BatchNorm statistics: use_global_stats: true of bn1 is not copied" in notices
    caffe_net = validate.load_net(net, "TRAIN")
    caffe_net.forward()
    # Caffe's BatchNorm accumulates statistics (its third blob counts them) only when it computes them in TRAIN.
    assert caffe_net.params["conv1_1_batchnorm"][2].data[0] == 1
    assert caffe_net.params["bn1"][2].data[0] == 0


SEPARATE_TOPS = input_layer("data", (2, 3, 8, 8)) + """
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "bn1" type: "BatchNorm" bottom: "conv1" top: "conv1_bn" }
layer { name: "scale1" type: "Scale" bottom: "conv1_bn" top: "conv1_scale" scale_param { bias_term: true } }
layer { name: "relu1" type: "ReLU" bottom: "conv1_scale" top: "conv1_relu" }
layer { name: "norm1" type: "LRN" bottom: "conv1_relu" top: "norm1" lrn_param { local_size: 3 } }
layer { name: "conv2" type: "Convolution" bottom: "norm1" top: "conv2"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "relu2" type: "ReLU" bottom: "conv2" top: "relu2" }
layer { name: "pool" type: "Pooling" bottom: "conv2" top: "pool" pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
layer { name: "sum" type: "Eltwise" bottom: "relu2" bottom: "conv2" top: "sum" }
"""


@pytest.mark.caffe
def test_followers_with_their_own_tops_belong_to_the_unit():
    """Issue 8.6: BatchNorm/Scale/ReLU/LRN with separate tops follow conv1; the replica comes after them,
    carries copies of them, and its DropIn joins the end of both chains."""
    net = prototxt.parse(SEPARATE_TOPS)
    replicate(net, "conv1", 1, dropin={"length": 10}, activation="ReLU")
    assert names(net)[1:11] == ["conv1", "bn1", "scale1", "relu1", "norm1", "conv1_1", "conv1_1_batchnorm",
                                "conv1_1_scale", "conv1_1_relu", "conv1_1_lrn"]
    assert layer(net, "conv1_1").get_all("bottom") == ["norm1"]
    assert [(layer(net, n).get("bottom"), layer(net, n).get("top")) for n in names(net)[7:11]] == [
        ("conv1_1", "conv1_1_batchnorm"), ("conv1_1_batchnorm", "conv1_1_scale"),
        ("conv1_1_scale", "conv1_1_relu"), ("conv1_1_relu", "conv1_1_lrn")]
    assert layer(net, "conv1_1_dropin").get_all("bottom") == ["norm1", "conv1_1_lrn"]
    assert layer(net, "conv2").get_all("bottom") == ["conv1_1_dropin"]
    assert [one.get("type") for one in rewrite.layers(net)].count("ReLU") == 3  # no ReLU added by --add-activation
    validate.check_net(net, "TRAIN")  # Caffe builds it, and agrees on every shape
    # conv2's output has three readers: its ReLU is no follower, the replica comes right after conv2.
    net = prototxt.parse(SEPARATE_TOPS)
    replicate(net, "conv2", 1, dropin={"length": 10})
    assert layer(net, "conv2_1").get_all("bottom") == ["conv2"]
    assert layer(net, "relu2").get_all("bottom") == ["conv2_1_dropin"]


FIRE = input_layer("data", (2, 3, 8, 8)) + """
layer { name: "squeeze" type: "Convolution" bottom: "data" top: "squeeze"
  convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "squeeze_relu" type: "ReLU" bottom: "squeeze" top: "squeeze" }
layer { name: "expand1" type: "Convolution" bottom: "squeeze" top: "expand1"
  convolution_param { num_output: 4 kernel_size: 1 weight_filler { type: "xavier" } } }
layer { name: "expand3" type: "Convolution" bottom: "squeeze" top: "expand3"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
layer { name: "concat" type: "Concat" bottom: "expand1" bottom: "expand3" top: "concat" }
layer { name: "drop" type: "Dropout" bottom: "concat" top: "concat" }
layer { name: "out" type: "Convolution" bottom: "concat" top: "out"
  convolution_param { num_output: 2 kernel_size: 1 weight_filler { type: "xavier" } } }
"""


@pytest.mark.caffe
def test_regularize_after_a_join_takes_prev_from_where_the_branches_split():
    """Issue 8.3: after a Concat, prev was the Concat's first input (half the channels prev == new, the
    other half zeros); prev is the common ancestor of the branches, named in a note."""
    net, notices = prototxt.parse(FIRE), []
    regularize(net, "drop", 0.5, notices=notices)
    assert layer(net, "squeeze_resized").get_all("bottom") == ["squeeze"]
    assert layer(net, "drop_dropin").get_all("bottom") == ["squeeze_resized", "concat"]
    assert notices == ["--regularize drop: prev is 'squeeze' (2, 2, 8, 8), the nearest blob before Concat 'concat' "
                       "that every path from the net's inputs passes through; resized to (2, 8, 8, 8) by a "
                       "Resize layer"]
    validate.check_net(net, "TRAIN")
    # Chosen explicitly with P:BLOB.
    net, notices = prototxt.parse(FIRE), []
    regularize(net, "drop", 0.5, notices=notices, prev="expand3")
    assert layer(net, "expand3_resized").get_all("bottom") == ["expand3"]
    assert notices[0].startswith("--regularize drop: prev is 'expand3' (2, 4, 8, 8), as given; resized")
    with pytest.raises(ConfigError, match="--regularize drop=0.5:nowhere: prev must be a blob made before drop"):
        regularize(prototxt.parse(FIRE), "drop", 0.5, prev="nowhere")


def test_common_ancestor_of_chains_and_joins():
    net = prototxt.parse(FIRE)
    drop = layer(net, "drop")
    assert rewrite.common_ancestor(net, "concat", drop) == "squeeze"
    assert rewrite.common_ancestor(net, "expand3", drop) == "squeeze"
    assert rewrite.common_ancestor(net, "squeeze", drop) == "data"
    assert rewrite.common_ancestor(net, "data", drop) is None


def test_regularize_with_an_unknown_shape_names_the_blob_to_give():
    """Issue 8.10: the message names the blob whose shape --input-shape must give."""
    text = FIRE.replace('bottom: "data" top: "squeeze"', 'bottom: "zoomed" top: "squeeze"').replace(
        'layer { name: "squeeze"', 'layer { name: "zoom" type: "Interp" bottom: "data" top: "zoomed" }\n'
                                   'layer { name: "squeeze"', 1)
    net = prototxt.parse(text)
    with pytest.raises(ConfigError) as error:
        regularize(net, "drop", 0.5)
    assert str(error.value) == ("--regularize drop: prev: the shape of blob 'squeeze' is unknown (it follows from "
                                "blob 'zoomed', whose shape is unknown): shape inference does not know layer 'zoom' of "
                                "type Interp; give the shape of 'zoomed' with --input-shape zoomed=C,H,W (or N,C,H,W)")


def test_replicate_with_an_unknown_shape_names_the_blob_to_give():
    """Issue 8.10, for --replicate too: where an unknown shape starts is the blob --input-shape must give."""
    text = FIRE.replace('bottom: "data" top: "squeeze"', 'bottom: "zoomed" top: "squeeze"').replace(
        'layer { name: "squeeze"', 'layer { name: "zoom" type: "Interp" bottom: "data" top: "zoomed" }\n'
                                   'layer { name: "squeeze"', 1)
    net = prototxt.parse(text)
    with pytest.raises(ConfigError, match="--replicate squeeze_relu: whether a ReLU layer keeps the shape depends on "
                                          "its input: the shape of blob 'squeeze' is unknown .* give the shape of "
                                          "'zoomed' with --input-shape zoomed=C,H,W"):
        replicate(net, "squeeze_relu", 1, dropin={"length": 5})


# ---------------------------------------------------------------------------------------------
# widen: LAYER keeps its C units, an extra layer computes C2 - C more, a gradual DropIn lets them in

def test_widen_emits_the_extra_layer_concat_padded_prev_and_dropin(net):
    found = shapes.infer(net)
    notices = []
    rewrite.widen(net, "conv1", 10, {"length": 100, "iter_size": 1}, found, p_top=True, notices=notices)
    assert names(net)[2:9] == ["conv1", "relu1", "conv1_extra", "conv1_extra_relu", "conv1_wide", "conv1_padded",
                               "conv1_widen"]
    extra = layer(net, "conv1_extra")
    param = extra.get("convolution_param")
    assert extra.get_all("bottom") == ["data"] and extra.get_all("top") == ["conv1_extra"]
    assert (param.get("num_output"), param.get("kernel_size"), param.get("stride")) == (4, 5, 2)  # same geometry
    assert param.get("weight_filler") == prototxt.parse('type: "xavier"')  # conv1's own
    assert [spec.get("name") for spec in extra.get_all("param")] == [None, None]  # not tied to conv1's weights
    relu = layer(net, "conv1_extra_relu")
    assert relu.get_all("bottom") == relu.get_all("top") == ["conv1_extra"]
    assert layer(net, "conv1_wide").get("type") == "Concat"
    assert layer(net, "conv1_wide").get_all("bottom") == ["conv1", "conv1_extra"]
    assert layer(net, "conv1_padded").get_all("bottom") == ["conv1"]
    assert config(net, "conv1_padded") == {"name": "conv1_padded", "channels": 10}
    assert layer(net, "conv1_widen").get_all("bottom") == ["conv1_padded", "conv1_wide"]
    assert layer(net, "conv1_widen").get_all("top") == ["conv1_widen", "conv1_widen_p"]
    assert config(net, "conv1_widen") == {"name": "conv1_widen", "length": 100, "iter_size": 1}
    assert layer(net, "pool1").get_all("bottom") == ["conv1_widen"]
    assert layer(net, "conv1").get("convolution_param").get("num_output") == 6  # LAYER keeps its C units
    inferred, _ = shapes.infer(net)  # the rewrite patches no shapes: the net says them
    assert (inferred["conv1_extra"], inferred["conv1_wide"], inferred["conv1_padded"], inferred["conv1_widen"]) == \
           ((2, 4, 4, 4), (2, 10, 4, 4), (2, 10, 4, 4), (2, 10, 4, 4))
    assert inferred["conv1_widen_p"] == (1,)
    assert all(inferred[blob] == shape for blob, shape in found[0].items() if blob not in ("pool1", "ip1"))
    assert inferred["pool1"] == (2, 10, 2, 2)
    assert notices == ["--widen conv1=10: ip1 reads 10 channels instead of 6, so Caffe gives it more input weights; "
                       "a --weights file trained before the widening cannot load it (Caffe stops on the shape "
                       "mismatch): rename it to start it fresh, or give expand_net the trained model with "
                       "--weights, which starts it zero-padded"]


@pytest.mark.caffe
def test_widen_an_inner_product_copies_its_dropout_and_gives_a_live_filler(net):
    found = shapes.infer(net)
    notices = []
    rewrite.widen(net, "ip1", 12, {"length": 10}, found, notices=notices)
    assert names(net)[5:11] == ["ip1", "drop1", "ip1_extra", "ip1_extra_dropout", "ip1_wide", "ip1_padded"]
    assert layer(net, "ip1_extra").get("inner_product_param").get("weight_filler") == prototxt.parse('type: "xavier"')
    assert "the extra units of ip1 get weight_filler xavier: ip1 has none (Caffe's default, constant 0, would make " \
           "them output 0 and never learn)" in notices
    assert layer(net, "ip2").get_all("bottom") == ["ip1_widen"]
    assert shapes.infer(net)[0]["ip1_widen"] == (2, 12)
    validate.load_net(net, "TRAIN")


def test_widen_without_dropin_is_the_wide_net(net):
    found = shapes.infer(net)
    rewrite.widen(net, "conv1", 10, None, found)
    assert "Python" not in [one.get("type") for one in rewrite.layers(net)]
    assert layer(net, "pool1").get_all("bottom") == ["conv1_wide"]


@pytest.mark.parametrize("name,width,message", [
    ("pool1", 10, "--widen pool1=10: only a Convolution, Deconvolution or InnerProduct layer can be widened, "
                  "pool1 is a Pooling layer"),
    ("conv1", 6, "--widen conv1=6: C2, the widened number of outputs, must be an integer above conv1's num_output 6"),
    ("ip2", 5, "--widen ip2=5: ip2's output reaches the loss or accuracy layer loss, so widening it would change "
               "the net's outputs; widen a hidden layer"),
    ("conv11", 8, "--widen: no layer named 'conv11' in the net; did you mean conv1"),
])
def test_widen_errors(net, name, width, message):
    found = shapes.infer(net)
    before = prototxt.dumps(net)
    with pytest.raises(ConfigError) as error:
        rewrite.widen(net, name, width, {"length": 5}, found)
    assert message in str(error.value)
    assert prototxt.dumps(net) == before


def forced(caffe_net, join, count):
    """Set DropIn `join`'s counter (count = high * 2**22 + low) and run the net forward once."""
    caffe_net.params[join][0].data[...] = (count % 2 ** 22, count // 2 ** 22)
    caffe_net.forward()
    return {blob: caffe_net.blobs[blob].data.copy() for blob in caffe_net.blobs}


@pytest.mark.caffe
@pytest.mark.parametrize("phase", ["TRAIN", "TEST"])
def test_widened_first_units_are_the_layers_at_every_p(phase):
    """Followers (BatchNorm, Scale, ReLU, LRN across channels) run on each part apart, so the first C
    units of the join are LAYER's chain's at every p; the extra ones are 0 at p = 0 and the extra
    layer's at p = 1. TRAIN picks units (exact); TEST blends p * new + (1 - p) * prev (within rounding)."""
    net = prototxt.parse(SEPARATE_TOPS)
    found = shapes.infer(net)
    rewrite.widen(net, "conv1", 7, {"length": 8}, found, p_top=True)
    assert layer(net, "conv1_wide").get_all("bottom") == ["norm1", "conv1_extra_lrn"]
    assert layer(net, "conv2").get_all("bottom") == ["conv1_widen"]
    caffe_net = validate.load_net(net, phase)
    rng = numpy.random.default_rng(3)
    caffe_net.blobs["data"].data[...] = rng.normal(size=caffe_net.blobs["data"].data.shape)
    for count in (0, 2, 4, 6, 8):
        blobs = forced(caffe_net, "conv1_widen", count)
        assert blobs["conv1_widen_p"][0] == count / 8
        joined, first = blobs["conv1_widen"], blobs["norm1"]
        if phase == "TRAIN":
            assert numpy.array_equal(joined[:, :4], first)
        else:
            numpy.testing.assert_allclose(joined[:, :4], first, rtol=1e-6, atol=1e-7)
        extra = blobs["conv1_extra_lrn"]
        if count == 0:
            assert not joined[:, 4:].any()
        elif count == 8:
            assert numpy.array_equal(joined[:, 4:], extra)
        elif phase == "TEST":
            numpy.testing.assert_allclose(joined[:, 4:], extra * count / 8, rtol=1e-5, atol=1e-7)
        else:
            taken = joined[:, 4:] == extra
            assert (joined[:, 4:][~taken] == 0).all() and 0 < taken[extra != 0].mean() < 1
    assert abs(blobs["conv1_extra_lrn"]).max() > 0


@pytest.mark.caffe
def test_a_short_training_run_of_a_widened_net_moves_p(tmp_path):
    """caffe train on a DummyData net widened at conv1: p logged at each iteration grows i / L."""
    from test_caffe_train import caffe_train
    text = """
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 1 dim: 8 dim: 8 } shape { dim: 4 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 2 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip" type: "InnerProduct" bottom: "conv1" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""
    net = prototxt.parse(text)
    found = shapes.infer(net)
    rewrite.widen(net, "conv1", 5, {"length": 4, "iter_size": 1}, found, p_top=True)
    path = tmp_path / "net.prototxt"
    path.write_text(prototxt.dumps(net))
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 6\ndisplay: 1\nsolver_mode: CPU\n'
                      'snapshot_prefix: "%s"\n' % (path, tmp_path / "snap"))
    run = caffe_train("python", "--solver=%s" % solver)
    assert run.returncode == 0, run.stderr[-3000:]
    logged = [float(p) for p in re.findall(r"\] +Train net output #\d+: conv1_widen_p = (\S+)", run.stderr)]
    assert logged == [pytest.approx(min(1.0, i / 4)) for i in range(6)]
    trained = caffe.Net(str(path), caffe.TRAIN, weights=str(tmp_path / "snap_iter_6.caffemodel"))
    assert int(trained.params["conv1_widen"][0].data[0]) == 6
