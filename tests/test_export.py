"""export_net: a trained DropIn net becomes a stock Caffe net that Caffe and OpenCV run, output for output.

Real consumers only: every export is built by Caffe and by OpenCV's dnn module (cv2.dnn.readNetFromCaffe)
and their outputs compared on the same input; (a) is a short real training of lenet-deep on MNIST whose
--train-val export runs under `caffe test` on the real test LMDB. Measured differences are printed
(`pytest -s` shows them).
"""
import io
import os
import re
import subprocess
import time

import numpy as np
import pytest

import dropin_caffe
from conftest import HAS_CAFFE, NATIVE_TYPES, our_layer, python_layer
from dropin_caffe.cli.expand_net import main as expand_main
from dropin_caffe.cli.export_net import main as export_main
from dropin_caffe.netgen import prototxt

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe
    import cv2

LOW = 2 ** 22




def export(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = export_main([str(a) for a in argv], out, err)
    return code, out.getvalue(), err.getvalue()


def proof(out):
    """{blob: relative difference} as export_net printed them."""
    return {m.group(1): float(m.group(3)) for m in
            re.finditer(r"output '([^']+)': max \|export - original\| = (\S+), relative (\S+)", out)}


def save_weights(path, net_path, counters=None, seed=0):
    """Build `net_path` in TEST, fill every parameter with seeded gaussians (counters as given:
    {DropIn name: count}), save; returns the weights path."""
    net = caffe.Net(net_path, caffe.TEST)
    rng = np.random.default_rng(seed)
    for name, blobs in net.params.items():
        if counters is not None and name in counters:
            blobs[0].data[...] = (counters[name] % LOW, counters[name] // LOW)
            continue
        for blob in blobs:
            blob.data[...] = rng.normal(0, 0.5, blob.data.shape)
    net.save(path)
    return path


def opencv_vs_caffe(proto, model, inputs=None, seed=1):
    """Max |OpenCV - Caffe| per output of a deploy net, on the same (seeded random) input."""
    net = caffe.Net(proto, model, caffe.TEST)
    cv = cv2.dnn.readNetFromCaffe(proto, model)
    rng = np.random.default_rng(seed)
    for name in net.inputs:
        x = inputs[name] if inputs is not None else rng.standard_normal(net.blobs[name].data.shape)
        x = np.ascontiguousarray(x, dtype=np.float32)
        net.blobs[name].data[...] = x
        cv.setInput(x, name)
    net.forward()
    # OpenCV names an output by the layer that writes it last.
    producer = {str(top): str(layer.get("name")) for layer in prototxt.read(proto).get_all("layer")
                for top in layer.get_all("top")}
    got = cv.forward([producer[blob] for blob in net.outputs])
    return {blob: float(np.abs(value.reshape(net.blobs[blob].data.shape) - net.blobs[blob].data).max())
            for blob, value in zip(net.outputs, got)}


def stock_types(proto):
    types = {str(layer.get("type")) for layer in prototxt.read(proto).get_all("layer")}
    assert "Python" not in types and not types & set(NATIVE_TYPES.values())
    return types


def report(case, proved, opencv):
    print("\n[%s] Caffe export vs original (relative): %s; OpenCV vs Caffe (max abs): %s" % (case, proved, opencv))


# ---------------------------------------------------------------------------------------------
# (d) Resize layers: channel pad, truncate, 2x bilinear up, odd-size down, nearest, a target bottom

RESIZE_NET = """\
name: "resizes"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 4 dim: 5 dim: 5 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
layer { name: "target" type: "Input" top: "target" input_param { shape { dim: 2 dim: 3 dim: 4 dim: 6 } } }
"""


def resize_net(impl):
    return RESIZE_NET + "".join([
        our_layer(impl, "pad", "Resize", ["conv1"], ["pad"], '{"name": "pad", "channels": 6}', counter=False),
        our_layer(impl, "up", "Resize", ["pad"], ["up"], '{"name": "up", "height": 10, "width": 10}', counter=False),
        our_layer(impl, "trunc", "Resize", ["up"], ["trunc"],
                  '{"name": "trunc", "channels": 3, "height": 7, "width": 3}', counter=False),
        our_layer(impl, "near", "Resize", ["trunc"], ["near"],
             '{"name": "near", "height": 3, "width": 5, "interp": "nearest"}', counter=False),
        our_layer(impl, "like", "Resize", ["near", "target"], ["like"], '{"name": "like"}', counter=False),
        'layer { name: "conv2" type: "Convolution" bottom: "like" top: "conv2"\n'
        '  convolution_param { num_output: 2 kernel_size: 1 } }\n'])


@pytest.mark.caffe
def test_d_resize_layers_become_fixed_stock_layers_that_caffe_and_opencv_run(write, tmp_path, impl):
    net = write("resizes.prototxt", resize_net(impl))
    weights = save_weights(str(tmp_path / "resizes.caffemodel"), net)
    code, out, err = export(net, weights, "-o", tmp_path / "out", "--batch", 2)
    assert code == 0, err
    assert "Resize 'pad': Convolution 1x1 (channels 4 -> 6)" in out
    assert "Resize 'up': Reshape + InnerProduct axis 2 (bilinear 5x5 -> 10x10) + Reshape" in out
    assert "Resize 'trunc': Convolution 1x1 (channels 6 -> 3) + Reshape + InnerProduct axis 2 (bilinear 10x10 -> " \
           "7x3) + Reshape" in out
    assert "Resize 'near': Reshape + InnerProduct axis 2 (nearest 7x3 -> 3x5) + Reshape" in out
    assert "Resize 'like': Reshape + InnerProduct axis 2 (bilinear 3x5 -> 4x6) + Reshape" in out
    proved = proof(out)
    assert list(proved) == ["conv2"] and proved["conv2"] <= 1e-5
    deploy = str(tmp_path / "out" / "resizes_deploy.prototxt")
    model = str(tmp_path / "out" / "resizes_deploy.caffemodel")
    assert stock_types(deploy) == {"Input", "Convolution", "Reshape", "InnerProduct"}
    assert "target" not in open(deploy).read()  # only the target shape was read from it: the input goes
    opencv = opencv_vs_caffe(deploy, model)
    report("d resize %s" % impl, proved, opencv)
    assert opencv["conv2"] <= 1e-4
    # --train-val: the fixed layers do not learn.
    code, out, err = export(net, weights, "-o", tmp_path / "stock", "--train-val")
    assert code == 0, err
    assert proof(out)["conv2"] <= 1e-5
    stock = prototxt.read(str(tmp_path / "stock" / "resizes_stock.prototxt")).get_all("layer")
    fixed = [layer for layer in stock if str(layer.get("type")) in ("Convolution", "InnerProduct")
             and str(layer.get("name")) not in ("conv1", "conv2")]
    assert len(fixed) == 6
    assert all(layer.get_all("param") == [prototxt.Message([["lr_mult", 0], ["decay_mult", 0]])] for layer in fixed)


# ---------------------------------------------------------------------------------------------
# (c) regularizing DropIn, a blend, a test-mode "prev" whose new branch dies; deploy conversion

SMALL_NET = """\
name: "small"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 1 dim: 2 dim: 3 } shape { dim: 4 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
layer { name: "ip0" type: "InnerProduct" bottom: "data" top: "ip0" inner_product_param { num_output: 8 } }
layer { name: "ip1" type: "InnerProduct" bottom: "ip0" top: "ip1" inner_product_param { num_output: 8 } }
layer { name: "relu1" type: "ReLU" bottom: "ip1" top: "ip1" }
layer { name: "ip2" type: "InnerProduct" bottom: "reg" top: "ip2" inner_product_param { num_output: 8 } }
layer { name: "ip3" type: "InnerProduct" bottom: "blend" top: "ip3" inner_product_param { num_output: 8 } }
layer { name: "scores" type: "InnerProduct" bottom: "back" top: "scores" inner_product_param { num_output: 3 } }
layer { name: "accuracy" type: "Accuracy" bottom: "scores" bottom: "label" top: "accuracy" include { phase: TEST } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "loss" }
"""


def small_net(impl):
    """data -> ip0 -> ip1 (ReLU) -> reg = regularize(ip0, ip1) -> ip2 -> blend = DropIn(reg, ip2) at
    counter 30 of 100 -> ip3 -> back = DropIn(blend, ip3) test "prev" -> scores -> loss."""
    lines = SMALL_NET.splitlines(True)
    reg = our_layer(impl, "reg", "DropIn", ["ip0", "ip1"], ["reg", "reg_p"],
               '{"name": "reg", "mode": "regularize", "p_new": 0.5}').replace(
        "  param {", "  loss_weight: 0 loss_weight: 0\n  param {")
    blend = our_layer(impl, "blend", "DropIn", ["reg", "ip2"], ["blend"], '{"name": "blend", "length": 100}')
    back = our_layer(impl, "back", "DropIn", ["blend", "ip3"], ["back"],
                     '{"name": "back", "length": 10, "test": "prev"}')
    return "".join(lines[:7] + [reg] + lines[7:8] + [blend] + lines[8:9] + [back] + lines[9:])


@pytest.mark.caffe
def test_c_regularize_blend_and_test_prev_export_for_caffe_and_opencv(write, tmp_path, impl):
    net = write("small.prototxt", small_net(impl))
    weights = save_weights(str(tmp_path / "small.caffemodel"), net, {"reg": 7, "blend": 30, "back": 5})
    code, out, err = export(net, weights, "-o", tmp_path / "out")
    assert code == 0, err
    assert "DropIn 'reg': p = 0.5 (counter 7, regularize): Eltwise SUM with coeff (0.5, 0.5)" in out
    assert "DropIn 'blend': p = 0.3 (counter 30): Eltwise SUM with coeff (0.7, 0.3)" in out
    assert "DropIn 'back': p = 0.5 (counter 5), test \"prev\": removed, its consumers read 'blend' (prev)" in out
    proved = proof(out)
    assert list(proved) == ["prob"] and proved["prob"] <= 1e-5
    deploy = str(tmp_path / "out" / "small_deploy.prototxt")
    model = str(tmp_path / "out" / "small_deploy.caffemodel")
    tree = prototxt.read(deploy)
    names = [str(layer.get("name")) for layer in tree.get_all("layer")]
    # ip3 fed only the dropped `new` of "back": dead, gone with its weights; the label, loss and
    # accuracy go; SoftmaxWithLoss becomes Softmax "prob".
    assert names == ["data", "ip0", "ip1", "relu1", "reg", "ip2", "blend", "scores", "prob"]
    assert tree.get_all("layer")[0].get_all("top") == ["data"]
    assert stock_types(deploy) == {"Input", "InnerProduct", "ReLU", "Eltwise", "Softmax"}
    stored = caffe.Net(deploy, model, caffe.TEST).params
    assert "ip3" not in stored and "reg" not in stored
    opencv = opencv_vs_caffe(deploy, model)
    report("c regularize/blend/prev %s" % impl, proved, opencv)
    assert opencv["prob"] <= 1e-4


@pytest.mark.caffe
def test_train_val_refuses_a_blend_unless_allowed(write, tmp_path):
    net = write("small.prototxt", small_net("python"))
    weights = save_weights(str(tmp_path / "small.caffemodel"), net, {"reg": 7, "blend": 30, "back": 5})
    code, out, err = export(net, weights, "-o", tmp_path / "out", "--train-val")
    assert code == 2 and not out and len(err.splitlines()) == 1
    assert "DropIn blend is at 0 < p < 1 (p = 0.3)" in err and "--allow-blend" in err
    assert not os.path.exists(tmp_path / "out")
    code, out, err = export(net, weights, "-o", tmp_path / "out", "--train-val", "--allow-blend")
    assert code == 0, err
    stock = prototxt.read(str(tmp_path / "out" / "small_stock.prototxt"))
    blend = [layer for layer in stock.get_all("layer") if layer.get("name") == "blend"][0]
    assert str(blend.get("type")) == "Eltwise"
    assert {str(layer.get("type")) for layer in stock.get_all("layer")} >= {"DummyData", "SoftmaxWithLoss",
                                                                             "Accuracy"}
    assert set(proof(out)) == {"accuracy", "loss"}


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, nothing written

@pytest.mark.caffe
def test_bad_inputs_are_one_line_and_write_nothing(write, tmp_path):
    net = write("small.prototxt", small_net("python"))
    weights = save_weights(str(tmp_path / "small.caffemodel"), net, {"reg": 7, "blend": 30, "back": 5})
    plain = write("plain.prototxt", RESIZE_NET)
    plain_weights = save_weights(str(tmp_path / "plain.caffemodel"), plain)
    other = write("resizes.prototxt", resize_net("python"))
    other_weights = save_weights(str(tmp_path / "resizes.caffemodel"), other)
    out_dir = tmp_path / "out"
    cases = [
        ((plain, plain_weights), "nothing to export in %s: it has no DropIn or Resize layer" % plain),
        ((net, other_weights), "DropIn 'reg': its counter blob is missing from WEIGHTS"),
        ((net, str(tmp_path / "none.caffemodel")), "cannot read WEIGHTS"),
        ((net, net), "is not a binary .caffemodel"),
        ((net, weights, "--solver", net), "--solver goes with --train-val"),
        ((net, weights, "--batch", "0"), "--batch must be an integer >= 1, got 0"),
    ]
    for argv, message in cases:
        code, out, err = export(*argv, "-o", out_dir)
        assert code == 2 and not out, (argv, err)
        assert len(err.splitlines()) == 1 and message in err, (message, err)
        assert not os.path.exists(out_dir)
    # WEIGHTS of another net with the layer names of this one but other shapes
    wrong = write("wrong.prototxt", small_net("python").replace("dim: 2 dim: 3 }", "dim: 2 dim: 4 }"))
    wrong_weights = save_weights(str(tmp_path / "wrong.caffemodel"), wrong, {"reg": 7, "blend": 30, "back": 5})
    code, out, err = export(net, wrong_weights, "-o", out_dir)
    assert code == 2 and "WEIGHTS does not match layer 'ip0'" in err and len(err.splitlines()) == 1
    assert not os.path.exists(out_dir)
    # An existing output stays as it was without --force; the other output is not written either.
    out_dir.mkdir()
    (out_dir / "small_deploy.caffemodel").write_bytes(b"keep")
    code, out, err = export(net, weights, "-o", out_dir)
    assert code == 2 and "exists; pass --force" in err and len(err.splitlines()) == 1
    assert os.listdir(out_dir) == ["small_deploy.caffemodel"]
    assert (out_dir / "small_deploy.caffemodel").read_bytes() == b"keep"
    code, out, err = export(net, weights, "-o", out_dir, "--force")
    assert code == 0, err
    assert sorted(os.listdir(out_dir)) == ["small_deploy.caffemodel", "small_deploy.prototxt"]


IN_PLACE_NET = """\
layer { name: "x" type: "Input" top: "x" input_param { shape { dim: 3 dim: 6 } } }
layer { name: "prev" type: "InnerProduct" bottom: "x" top: "prev" inner_product_param { num_output: 5 } }
layer { name: "new" type: "InnerProduct" bottom: "prev" top: "new" inner_product_param { num_output: 5 } }
%s
layer { name: "relu" type: "ReLU" bottom: "drop" top: "drop" }
layer { name: "a" type: "InnerProduct" bottom: "drop" top: "a" inner_product_param { num_output: 4 } }
layer { name: "b" type: "InnerProduct" bottom: "new" top: "b" inner_product_param { num_output: 4 } }
layer { name: "sum" type: "Eltwise" bottom: "a" bottom: "b" top: "sum" }
"""


@pytest.mark.caffe
def test_a_dropin_whose_top_is_changed_in_place_while_new_is_read_again_becomes_a_copy(write, tmp_path):
    """Reading `new` for the removed DropIn would let the ReLU overwrite `new` before "b" reads it."""
    net = write("inplace.prototxt", IN_PLACE_NET % python_layer("drop", "DropIn", ["prev", "new"], ["drop"],
                                                                '{"name": "drop", "length": 10}'))
    weights = save_weights(str(tmp_path / "inplace.caffemodel"), net, {"drop": 12})
    code, out, err = export(net, weights, "-o", tmp_path / "out", "--batch", 3)
    assert code == 0, err
    assert "DropIn 'drop': p = 1 (counter 12): Power (an exact copy of 'new', new: a later layer works in place " \
           "on its top while 'new' is read again)" in out
    proved = proof(out)
    deploy, model = (str(tmp_path / "out" / ("inplace_deploy" + ext)) for ext in (".prototxt", ".caffemodel"))
    opencv = opencv_vs_caffe(deploy, model)
    report("in-place copy", proved, opencv)
    assert proved["sum"] <= 1e-5 and opencv["sum"] <= 1e-4


@pytest.mark.caffe
def test_a_data_layer_whose_source_is_not_here_needs_input_shape(write, tmp_path):
    net = write("small.prototxt", small_net("python"))
    weights = save_weights(str(tmp_path / "small.caffemodel"), net, {"reg": 7, "blend": 30, "back": 5})
    lines = small_net("python").splitlines(True)
    data = ('layer { name: "data" type: "Data" top: "data" top: "label" transform_param { scale: 0.5 mean_value: 3 }\n'
            '  data_param { source: "%s" batch_size: 4 backend: LMDB } }\n' % (tmp_path / "no_lmdb"))
    lmdb_net = write("lmdb.prototxt", "".join(lines[:1] + [data] + lines[4:]))
    code, out, err = export(lmdb_net, weights, "-o", tmp_path / "out")
    assert code == 2 and len(err.splitlines()) == 1
    assert "the shape of blob 'data' is unknown" in err and "--input-shape data=C,H,W" in err
    assert not os.path.exists(tmp_path / "out")
    code, out, err = export(lmdb_net, weights, "-o", tmp_path / "out", "--input-shape", "data=1,2,3")
    assert code == 0, err
    assert "Data 'data' is an Input now, without its transform_param; do to each input what it did: subtract " \
           "mean_value 3 (per channel), then multiply by scale 0.5\n" in out  # issue 22.11
    assert proof(out)["prob"] <= 1e-5
    first = prototxt.read(str(tmp_path / "out" / "lmdb_deploy.prototxt")).get_all("layer")[0]
    assert str(first.get("type")) == "Input" and [d for d in first.get("input_param").get("shape").get_all("dim")] \
        == [1, 1, 2, 3]


@pytest.mark.caffe
def test_a_layer_reading_a_p_top_is_refused(write, tmp_path):
    net = write("ptop.prototxt", IN_PLACE_NET.split("%s")[0] + python_layer(
        "drop", "DropIn", ["prev", "new"], ["drop", "drop_p"], '{"name": "drop", "length": 10}') +
        'layer { name: "use_p" type: "Power" bottom: "drop_p" top: "use_p" }\n')
    weights = save_weights(str(tmp_path / "ptop.caffemodel"), net, {"drop": 3})
    code, out, err = export(net, weights, "-o", tmp_path / "out")
    assert code == 2 and len(err.splitlines()) == 1 and not os.path.exists(tmp_path / "out")
    assert "layer 'use_p' reads 'drop_p', the p top of DropIn 'drop', which the export removes" in err


@pytest.mark.caffe
def test_outputs_that_differ_exit_1_and_write_nothing(write, tmp_path, monkeypatch):
    """The blends differ from the Python layer's arithmetic by float32 rounding (2e-8 relative);
    with no tolerance at all that is a difference, which must stop the export."""
    from dropin_caffe.netgen import export as exporting
    net = write("small.prototxt", small_net("python"))
    weights = save_weights(str(tmp_path / "small.caffemodel"), net, {"reg": 7, "blend": 30, "back": 5})
    monkeypatch.setattr(exporting, "TOLERANCE", 0.0)
    code, out, err = export(net, weights, "-o", tmp_path / "out")
    assert code == 1 and "output 'prob'" in out
    assert len(err.splitlines()) == 1 and "the export's output 'prob' differs from the original's by" in err
    assert "(> 0, float32 rounding); nothing written" in err
    assert not os.path.exists(tmp_path / "out")
    code, out, err = export(net, weights, "-o", tmp_path / "out", "--no-validate")
    assert code == 0 and "output '" not in out, err
    assert sorted(os.listdir(tmp_path / "out")) == ["small_deploy.caffemodel", "small_deploy.prototxt"]


@pytest.mark.caffe
def test_the_python_api_and_the_tool(write, tmp_path):
    assert "export_net" in dropin_caffe.__all__
    net = write("resizes.prototxt", resize_net("python"))
    weights = save_weights(str(tmp_path / "resizes.caffemodel"), net)
    exported = dropin_caffe.export_net(net, weights, batch=3)
    assert exported.form == "deploy" and not exported.failures
    assert sorted(exported.weights) == ["conv1", "conv2", "like_resample", "near_resample", "pad", "trunc_channels",
                                        "trunc_resample", "up_resample"]
    assert exported.weights["pad"][0].shape == (6, 4, 1, 1)
    assert exported.weights["up_resample"][0].shape == (100, 25)
    assert not os.path.exists(tmp_path / "out")  # export_net writes nothing; write() does
    written = exported.write(str(tmp_path / "out"))
    assert [kind for kind, _ in written] == ["net", "weights"]
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "export_net.py")
    shown = subprocess.run(["python3", script, "--help"], stdout=subprocess.PIPE, universal_newlines=True)
    assert shown.returncode == 0 and "--train-val" in shown.stdout


WIDEN_BASE = """
name: "thin"
layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 2 dim: 1 dim: 8 dim: 8 } } }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
  convolution_param { num_output: 3 kernel_size: 3 weight_filler { type: "xavier" } } }
layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
layer { name: "ip1" type: "InnerProduct" bottom: "conv1" top: "ip1" inner_product_param { num_output: 4 } }
layer { name: "tanh1" type: "TanH" bottom: "ip1" top: "ip1" }
layer { name: "scores" type: "InnerProduct" bottom: "ip1" top: "scores" inner_product_param { num_output: 3 } }
"""


@pytest.mark.caffe
@pytest.mark.parametrize("count, merged", [(4, True), (2, False)])
def test_a_finished_widening_exports_as_one_wide_layer(tmp_path, count, merged):
    """expand_net --widen at p = 1: conv1 (3 + 2 outputs) and ip1 (4 + 3) each become one layer
    with the stacked weights, and the export's outputs equal the widened net's. Mid-schedule
    (p = 0.5) the Concat stays, blended with the padded prev."""
    expanded = dropin_caffe.expand_net(WIDEN_BASE, widen={"conv1": 5, "ip1": 7}, dropin_length=4)
    net = str(tmp_path / "wide.prototxt")
    with open(net, "w") as stream:
        stream.write(expanded.net_text)
    weights = save_weights(str(tmp_path / "wide.caffemodel"), net, {"conv1_widen": count, "ip1_widen": count})
    exported = dropin_caffe.export_net(net, weights, batch=2)
    assert exported.proof and not exported.failures
    names = [str(layer.get("name")) for layer in exported.net.get_all("layer")]
    if not merged:
        assert "conv1_extra" in names and "conv1_wide" in names
        return
    assert names == ["data", "conv1", "relu1", "ip1", "tanh1", "scores"]
    assert "widening 'conv1' + 'conv1_extra' (Concat 'conv1_wide'): merged into 'conv1' of 5 outputs" \
        in exported.lines
    assert exported.weights["conv1"][0].shape == (5, 1, 3, 3) and exported.weights["ip1"][0].shape == (7, 180)
    stored = caffe.Net(net, caffe.TEST, weights=weights)
    assert np.array_equal(exported.weights["conv1"][0][3:], stored.params["conv1_extra"][0].data)
    written = dict(exported.write(str(tmp_path / "out")))
    merged_net = caffe.Net(written["net"], caffe.TEST, weights=written["weights"])
    x = np.random.default_rng(5).standard_normal(stored.blobs["data"].data.shape)
    stored.blobs["data"].data[...] = merged_net.blobs["data"].data[...] = x
    want, got = stored.forward()["scores"].copy(), merged_net.forward()["scores"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(merged_net.blobs["conv1"].data, stored.blobs["conv1_widen"].data, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------
# (a) and (b): lenet-deep trained on real MNIST

DEPTH, LENGTH, ITERATIONS = 2, 100, 400
# One BLAS thread: on the two shared cores, OpenBLAS's threads double the training time.
ENVIRON = dict(os.environ, OPENBLAS_NUM_THREADS="1")


def expand(out_dir, data, *flags, max_iter=ITERATIONS, depth=DEPTH):
    code, _, err = _expand("--preset", "lenet-deep", "--depth", depth, "--dropin-length", LENGTH,
                           "--set", "train_source=%s" % data["train_lmdb"],
                           "--set", "test_source=%s" % data["test_lmdb"],
                           "--max-iter", max_iter, "--solver-mode", "CPU", "--dropin-seed", 1, "-q", "-o", out_dir,
                           *flags)
    assert code == 0, err


def _expand(*argv):
    out, err = io.StringIO(), io.StringIO()
    code = expand_main([str(a) for a in argv], out, err)
    return code, out.getvalue(), err.getvalue()


def train(out_dir, solver_name):
    """`caffe train` with the emitted solver: no test passes, a higher rate (short training), the
    final snapshot in out_dir. Returns (weights path, seconds)."""
    solver_path = os.path.join(out_dir, solver_name)
    solver = prototxt.read(solver_path)
    solver.set("base_lr", 0.02)
    solver.set("test_interval", 100000)
    solver.set("test_initialization", False)
    solver.set("snapshot_prefix", os.path.join(out_dir, "snap"))
    solver.set("random_seed", 1)  # the same initial weights every run (and --dropin-seed the same masks)
    prototxt.write(solver_path, solver, force=True)
    start = time.time()
    run = subprocess.run(["caffe", "train", "--solver=%s" % solver_path], cwd=out_dir, env=ENVIRON,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return os.path.join(out_dir, "snap_iter_%d.caffemodel" % solver.get("max_iter")), time.time() - start


def caffe_test(model, weights, iterations):
    run = subprocess.run(["caffe", "test", "-model", model, "-weights", weights, "-iterations", str(iterations)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300,
                         env=dict(ENVIRON, GLOG_minloglevel="0", GLOG_logtostderr="1"))
    assert run.returncode == 0, run.stderr[-3000:]
    return float(re.findall(r"\] accuracy = (\S+)", run.stderr)[-1])


@pytest.fixture(scope="module")
def mnist(tmp_path_factory):
    from dropin_caffe.experiments import datasets
    return datasets.prepare("mnist", str(tmp_path_factory.mktemp("mnist")), 10000, 1000)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, mnist):
    out_dir = str(tmp_path_factory.mktemp("a"))
    expand(out_dir, mnist)
    weights, seconds = train(out_dir, "lenet_deep_solver_dropin.prototxt")
    print("\n[a] trained lenet-deep (depth %d, L %d) for %d iterations in %.1f s" % (DEPTH, LENGTH, ITERATIONS,
                                                                                    seconds))
    return out_dir, weights


def mnist_images(mnist, tmp_path, count=16):
    """`count` real MNIST test images, scaled as the net reads them."""
    reader = tmp_path / "reader.prototxt"
    reader.write_text('layer { name: "data" type: "Data" top: "data" top: "label" transform_param { scale: 0.00390625 '
                      '} data_param { source: "%s" batch_size: %d backend: LMDB } }\n' % (mnist["test_lmdb"], count))
    net = caffe.Net(str(reader), caffe.TEST)
    net.forward()
    return net.blobs["data"].data.copy()


@pytest.mark.caffe
def test_a_trained_mnist_net_exports_for_caffe_test_and_opencv(trained, mnist, tmp_path):
    out_dir, weights = trained
    net = os.path.join(out_dir, "lenet_deep_dropin.prototxt")
    code, out, err = export(net, weights, "-o", tmp_path / "deploy", "--batch", 16)
    assert code == 0, err
    for k in (1, 2):
        assert "DropIn 'conv2_%d_dropin': p = 1 (counter %d): removed, its consumers read 'conv2_%d' (new)" \
               % (k, ITERATIONS, k) in out
    proved = proof(out)
    assert list(proved) == ["prob"] and proved["prob"] <= 1e-5
    deploy = str(tmp_path / "deploy" / "lenet_deep_dropin_deploy.prototxt")
    model = str(tmp_path / "deploy" / "lenet_deep_dropin_deploy.caffemodel")
    assert stock_types(deploy) == {"Input", "Convolution", "ReLU", "Pooling", "InnerProduct", "Softmax"}
    opencv = opencv_vs_caffe(deploy, model, {"data": mnist_images(mnist, tmp_path)})
    report("a deploy", proved, opencv)
    assert opencv["prob"] <= 1e-4

    # --train-val: `caffe test` on the real MNIST test LMDB gives the DropIn net's accuracy.
    solver = os.path.join(out_dir, "lenet_deep_solver_dropin.prototxt")
    code, out, err = export(net, weights, "-o", tmp_path / "stock", "--train-val", "--solver", solver)
    assert code == 0, err
    stock = str(tmp_path / "stock" / "lenet_deep_dropin_stock.prototxt")
    stock_model = str(tmp_path / "stock" / "lenet_deep_dropin_stock.caffemodel")
    written_solver = prototxt.read(str(tmp_path / "stock" / "lenet_deep_solver_dropin_stock.prototxt"))
    assert written_solver.get("net") == stock
    assert written_solver.get("snapshot_prefix") == os.path.join(out_dir, "snap") + "_stock"
    iterations = 10  # batch 100: the 1,000 test images
    original_accuracy = caffe_test(net, weights, iterations)
    stock_accuracy = caffe_test(stock, stock_model, iterations)
    print("\n[a] caffe test accuracy: DropIn net %.4f, stock export %.4f" % (original_accuracy, stock_accuracy))
    assert original_accuracy >= 0.95
    assert abs(stock_accuracy - original_accuracy) <= 1.0 / 1000 + 1e-9
    # Image by image: the same predictions on the 1,000 test images, but for one near-tie at most.
    original_net, stock_net = caffe.Net(net, weights, caffe.TEST), caffe.Net(stock, stock_model, caffe.TEST)
    flipped = 0
    for _ in range(iterations):
        original_net.forward()
        stock_net.forward()
        assert np.array_equal(original_net.blobs["label"].data, stock_net.blobs["label"].data)
        flipped += int((original_net.blobs["ip2"].data.argmax(1) != stock_net.blobs["ip2"].data.argmax(1)).sum())
    print("[a] predictions that differ between the DropIn net and the stock export: %d of 1000" % flipped)
    assert flipped <= 1

    # The export is the plain expanded net (--no-dropin), layer for layer, and runs with its weights.
    plain_dir = str(tmp_path / "plain")
    expand(plain_dir, mnist, "--no-dropin")
    plain = os.path.join(plain_dir, "lenet_deep_plain.prototxt")
    assert prototxt.read(stock).get_all("layer") == prototxt.read(plain).get_all("layer")
    plain_net = caffe.Net(plain, stock_model, caffe.TEST)
    stock_net = caffe.Net(stock, stock_model, caffe.TEST)
    original = caffe.Net(net, weights, caffe.TEST)
    for name, blobs in plain_net.params.items():
        for mine, theirs in zip(blobs, original.params[name]):
            assert np.array_equal(mine.data, theirs.data)
    assert set(plain_net.params) == set(stock_net.params)


@pytest.mark.caffe
def test_b_mid_schedule_with_stagger_blends_every_dropin(mnist, tmp_path):
    out_dir = str(tmp_path / "b")
    expand(out_dir, mnist, "--stagger", 20, depth=3, max_iter=50)
    weights, seconds = train(out_dir, "lenet_deep_solver_dropin.prototxt")
    net = os.path.join(out_dir, "lenet_deep_dropin.prototxt")
    code, out, err = export(net, weights, "-o", tmp_path / "deploy", "--batch", 16)
    assert code == 0, err
    found = [float(p) for p in re.findall(r"DropIn 'conv2_\d_dropin': p = (\S+) \(counter 50\): Eltwise SUM", out)]
    print("\n[b] trained %.1f s; p per DropIn: %s" % (seconds, found))
    assert found == pytest.approx([0.5, 0.3, 0.1])  # (50 - 20 i) / 100: distinct, strictly inside (0, 1)
    proved = proof(out)
    assert proved["prob"] <= 1e-5
    deploy = str(tmp_path / "deploy" / "lenet_deep_dropin_deploy.prototxt")
    model = str(tmp_path / "deploy" / "lenet_deep_dropin_deploy.caffemodel")
    assert "Eltwise" in stock_types(deploy)
    opencv = opencv_vs_caffe(deploy, model, {"data": mnist_images(mnist, tmp_path)})
    report("b stagger", proved, opencv)
    assert opencv["prob"] <= 1e-4


def test_without_caffe_the_tool_says_so_in_one_line(tmp_path):
    """Issue 22.2: a Python without Caffe (here one whose `import caffe` fails) gets one line and exit
    code 2, the code of missing things, not a traceback and 1, the code of outputs that differ."""
    (tmp_path / "caffe").mkdir()
    (tmp_path / "caffe" / "__init__.py").write_text("raise ImportError(\"No module named 'caffe'\")\n")
    environ = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "export_net.py")
    done = subprocess.run(["python3", script, "net.prototxt", "net.caffemodel", "-o", str(tmp_path / "out")],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, env=environ)
    assert done.returncode == 2 and done.stdout == "", done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("export_net.py: exporting needs Caffe, which ")
    assert "run it with the embedded Caffe: " in done.stderr and not os.path.exists(str(tmp_path / "out"))
