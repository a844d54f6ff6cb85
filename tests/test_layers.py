"""DropIn and Resize inside real caffe.Net instances: gradients, statistics, state, errors.

Every test runs against both implementations: the Python layers (type "Python") and the native
C++ layers (type "DropIn" / "DropInResize", the same python_param param_str). A native layer's
bad parameter stops the process (Caffe's LOG(FATAL)), so those cases run in a subprocess.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import HAS_CAFFE, REPO, input_layer, layer_object, our_layer
from dropin_caffe.errors import ConfigError

pytestmark = pytest.mark.caffe  # every test builds a caffe.Net
if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe

LOW = 2 ** 22


def get_count(net, name="drop"):
    low, high = (float(v) for v in net.params[name][0].data)
    return int(high) * LOW + int(low)


def set_count(net, count, name="drop"):
    net.params[name][0].data[...] = (count % LOW, count // LOW)


def dropin_text(impl, shape, param_str, p_top=True, second_shape=None):
    text = "force_backward: true\n" + input_layer("prev", shape) + input_layer("new", second_shape or shape)
    return text + our_layer(impl, "drop", "DropIn", ["prev", "new"], ["out", "p"] if p_top else ["out"], param_str)


def dropin_net(write, impl, shape, param_str, phase="TRAIN", p_top=True, second_shape=None):
    return caffe.Net(write("dropin.prototxt", dropin_text(impl, shape, param_str, p_top, second_shape)),
                     getattr(caffe, phase))


def resize_text(impl, shape, param_str, target_shape=None):
    text = "force_backward: true\n" + input_layer("x", shape)
    bottoms = ["x"]
    if target_shape:
        text += input_layer("target", target_shape)
        bottoms.append("target")
    return text + our_layer(impl, "resize", "Resize", bottoms, ["out"], param_str, counter=False)


def resize_net(write, impl, shape, param_str, target_shape=None):
    return caffe.Net(write("resize.prototxt", resize_text(impl, shape, param_str, target_shape)), caffe.TRAIN)


def native_stderr(path, forwards=0):
    """Build a native net from `path` in a fresh process (forward it `forwards` times), which must
    stop: its stderr."""
    script = ("import caffe; from dropin_caffe import native; native.load(); caffe.set_mode_cpu()\n"
              "net = caffe.Net(%r, caffe.TRAIN)\nfor _ in range(%d): net.forward()\n" % (path, forwards))
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, universal_newlines=True, timeout=120,
                         env=dict(os.environ, GLOG_minloglevel="2"))
    assert run.returncode != 0, run.stderr
    return run.stderr


def expect_failure(impl, capfd, path, message, forwards=0):
    """Python: a ConfigError carrying `message`, also on stderr; native: `message` on stderr."""
    if impl == "native":
        err = native_stderr(path, forwards)
        assert any(line.startswith("dropin_caffe: ") and message in line for line in err.splitlines()), err
        return
    with pytest.raises(ConfigError) as error:
        net = caffe.Net(path, caffe.TRAIN)
        for _ in range(forwards):
            net.forward()
    assert message in str(error.value)
    assert "dropin_caffe: " + str(error.value) in capfd.readouterr().err


def fill(net, seed=0):
    rng = np.random.default_rng(seed)
    for name in net.inputs:
        net.blobs[name].data[...] = rng.standard_normal(net.blobs[name].data.shape)


def check_gradients(net, before_forward=lambda: None, samples=40, eps=1e-2):
    """Backward of loss = sum(w * out) against central differences on sampled input units."""
    rng = np.random.default_rng(9)
    weights = rng.standard_normal(net.blobs["out"].data.shape).astype(np.float32)

    def loss():
        before_forward()
        net.forward()
        return float(np.sum(weights.astype(np.float64) * net.blobs["out"].data))

    loss()
    net.blobs["out"].diff[...] = weights
    net.backward()
    for name in net.inputs:
        blob = net.blobs[name]
        analytic = blob.diff.copy()
        for i in rng.choice(blob.count, size=min(samples, blob.count), replace=False):
            old = float(blob.data.flat[i])
            blob.data.flat[i] = old + eps
            up = loss()
            blob.data.flat[i] = old - eps
            down = loss()
            blob.data.flat[i] = old
            assert (up - down) / (2 * eps) == pytest.approx(analytic.flat[i], abs=2e-3, rel=2e-3), (name, i)


SHAPES = [(2, 3, 5, 7), (1, 4, 3, 3), (3, 11), (1, 1)]


@pytest.mark.parametrize("shape", SHAPES)
def test_dropin_train_gradients_with_the_mask_held_fixed(write, impl, shape):
    net = dropin_net(write, impl, shape, '{"mode": "regularize", "p_new": 0.5, "seed": 3}')
    fill(net)

    def same_mask():  # Python: the generator restarted; native: the mask is a function of (seed, count)
        set_count(net, 0)
        if impl == "python":
            layer_object(net, "drop").rng = np.random.default_rng(3)

    check_gradients(net, same_mask)
    net.forward()
    out, prev, new = (net.blobs[n].data for n in ("out", "prev", "new"))
    assert np.all((out == prev) | (out == new))


def test_dropin_train_selects_and_routes_exactly(write, impl):
    net = dropin_net(write, impl, (3, 5, 7, 9), '{"mode": "regularize", "p_new": 0.5}')
    fill(net)
    out = net.forward()["out"].copy()
    prev, new = net.blobs["prev"].data, net.blobs["new"].data
    from_new = out == new
    assert np.array_equal(out, np.where(from_new, new, prev)) and 0 < from_new.mean() < 1
    weights = np.random.default_rng(1).standard_normal(out.shape).astype(np.float32)
    net.blobs["out"].diff[...] = weights
    net.backward()
    assert np.array_equal(net.blobs["new"].diff, np.where(from_new, weights, 0))
    assert np.array_equal(net.blobs["prev"].diff, np.where(from_new, 0, weights))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("test_mode", ["expectation", "new", "prev"])
def test_dropin_test_gradients(write, impl, shape, test_mode):
    net = dropin_net(write, impl, shape, '{"length": 8, "test": "%s"}' % test_mode, phase="TEST")
    set_count(net, 3)
    fill(net)
    check_gradients(net)
    net.forward()
    prev, new = net.blobs["prev"].data, net.blobs["new"].data
    expected = {"expectation": 3 / 8 * new + 5 / 8 * prev, "new": new, "prev": prev}[test_mode]
    np.testing.assert_allclose(net.blobs["out"].data, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES)
def test_dropin_train_blend_values_and_gradients(write, impl, shape):
    net = dropin_net(write, impl, shape, '{"length": 8, "train": "blend", "seed": 1}')
    fill(net)
    check_gradients(net, lambda: set_count(net, 3))
    set_count(net, 3)
    out = net.forward()
    assert float(out["p"]) == pytest.approx(3 / 8) and get_count(net) == 4
    prev, new = net.blobs["prev"].data, net.blobs["new"].data
    np.testing.assert_allclose(out["out"], 3 / 8 * new + 5 / 8 * prev, rtol=1e-5, atol=1e-6)
    out_again = (set_count(net, 3), net.forward()["out"].copy())[1]
    assert np.array_equal(out_again, out["out"])  # deterministic: no mask drawn
    weights = np.random.default_rng(2).standard_normal(prev.shape).astype(np.float32)
    net.blobs["out"].diff[...] = weights
    net.backward()
    np.testing.assert_allclose(net.blobs["new"].diff, 3 / 8 * weights, rtol=1e-6)
    np.testing.assert_allclose(net.blobs["prev"].diff, 5 / 8 * weights, rtol=1e-6)


@pytest.mark.parametrize("count,source", [(0, "prev"), (8, "new")])
def test_dropin_train_blend_ends_copy_exactly(write, impl, count, source):
    net = dropin_net(write, impl, (2, 3, 4, 4), '{"length": 8, "train": "blend"}')
    fill(net)
    set_count(net, count)
    assert np.array_equal(net.forward()["out"], net.blobs[source].data)


@pytest.mark.parametrize("p_new", [0.1, 0.25, 0.5, 0.75, 0.9])
def test_dropin_fraction_from_new_follows_the_schedule(write, impl, p_new):
    net = dropin_net(write, impl, (64, 50, 8, 8), '{"length": 1000, "seed": 1}')
    set_count(net, int(p_new * 1000))
    net.blobs["prev"].data[...] = 0
    net.blobs["new"].data[...] = 1
    out = net.forward()
    assert float(out["p"]) == pytest.approx(p_new)
    fraction = float(out["out"].mean())
    assert abs(fraction - p_new) < 4 * np.sqrt(p_new * (1 - p_new) / out["out"].size)


@pytest.mark.parametrize("count,source", [(0, "prev"), (10, "new"), (25, "new")])
def test_dropin_ends_of_the_schedule_copy_exactly_without_drawing(write, impl, count, source):
    net = dropin_net(write, impl, (4, 3, 5, 5), '{"length": 10}')
    fill(net)
    set_count(net, count)
    if impl == "python":
        state = layer_object(net, "drop").rng.bit_generator.state
    net.forward()
    if impl == "python":
        assert layer_object(net, "drop").rng.bit_generator.state == state
    assert np.array_equal(net.blobs["out"].data, net.blobs[source].data)
    net.blobs["out"].diff[...] = 1
    net.backward()
    other = "new" if source == "prev" else "prev"
    assert (net.blobs[source].diff == 1).all() and not net.blobs[other].diff.any()


def test_dropin_same_seed_same_masks(write, impl):
    outs = []
    for seed in (5, 5, 6):
        net = dropin_net(write, impl, (8, 16), '{"length": 4, "seed": %d}' % seed)
        net.blobs["prev"].data[...] = 0
        net.blobs["new"].data[...] = 1
        outs.append(np.concatenate([net.forward()["out"].copy() for _ in range(3)]))
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], outs[2])


def test_dropin_counter_counts_train_passes_only_and_stays_exact_past_2_to_24(write, impl):
    net = dropin_net(write, impl, (2, 2), '{"length": %d}' % 2 ** 26)
    set_count(net, 2 ** 24 + 1)
    out = net.forward()
    assert get_count(net) == 2 ** 24 + 2
    assert float(out["p"]) == pytest.approx((2 ** 24 + 1) / 2 ** 26)
    low, high = net.params["drop"][0].data
    assert high * 2 ** 22 + low == 2 ** 24 + 2  # both halves exact in float32
    test = dropin_net(write, impl, (2, 2), '{"length": 4}', phase="TEST")
    test.forward()
    assert get_count(test) == 0


def test_dropin_start_and_iter_size(write, impl):
    net = dropin_net(write, impl, (1, 3), '{"length": 4, "start": 2, "iter_size": 2}')
    p_values = [float(net.forward()["p"]) for _ in range(12)]
    # forward passes 0..11 are solver iterations 0,0,1,1,...; p grows from iteration 2 over 4 more.
    assert p_values == [0, 0, 0, 0, 0, 0, 0.25, 0.25, 0.5, 0.5, 0.75, 0.75]


def test_regularize_mode_keeps_p_fixed(write, impl):
    net = dropin_net(write, impl, (1, 3), '{"mode": "regularize", "p_new": 0.3}')
    assert [float(net.forward()["p"]) for _ in range(3)] == [pytest.approx(0.3)] * 3


def test_test_net_follows_the_train_counter_through_the_solver(write, impl):
    train_test = "force_backward: true\n"
    train_test += 'layer { name: "data" type: "DummyData" top: "prev" top: "new" dummy_data_param {'
    train_test += ' shape { dim: 2 dim: 3 } shape { dim: 2 dim: 3 }'
    train_test += ' data_filler { type: "constant" value: 0 } data_filler { type: "constant" value: 1 } } }\n'
    train_test += our_layer(impl, "drop", "DropIn", ["prev", "new"], ["out", "p"], '{"length": 10}')
    net_path = write("net.prototxt", train_test)
    solver_path = write("solver.prototxt", """
        net: "%s"
        base_lr: 0.1
        weight_decay: 0.01
        lr_policy: "fixed"
        test_iter: 1
        test_interval: 1000
        max_iter: 100
        snapshot_prefix: "%s"
        solver_mode: CPU
        """ % (net_path, net_path + "_snap"))
    solver = caffe.SGDSolver(solver_path)
    solver.step(4)
    test = solver.test_nets[0]
    assert get_count(test) == 4
    out = test.forward()
    assert float(out["p"]) == pytest.approx(0.4)
    np.testing.assert_allclose(out["out"], 0.4, rtol=1e-6)


def test_a_counter_changed_by_the_solver_is_reported(write, impl, capfd):
    # the counter made fractional, as weight decay would, in the .caffemodel the net loads
    saved = caffe.Net(write("ok.prototxt", dropin_text("python", (1, 3), '{"name": "drop", "length": 10}')),
                      caffe.TRAIN)
    saved.params["drop"][0].data[0] = 0.999995
    weights = write("weights.caffemodel", "")
    saved.save(weights)
    path = write("bad.prototxt", dropin_text(impl, (1, 3), '{"name": "drop", "length": 10}'))
    message = "DropIn 'drop': its iteration counter (parameter blob) holds 0.99"
    if impl == "native":
        script = write("run.py", "import caffe\nfrom dropin_caffe import native\nnative.load()\n"
                                 "caffe.Net(%r, caffe.TRAIN, weights=%r).forward()\n" % (path, weights))
        run = subprocess.run([sys.executable, script], cwd=REPO, stderr=subprocess.PIPE,
                             universal_newlines=True, timeout=120)
        assert run.returncode != 0
        line = [line for line in run.stderr.splitlines() if line.startswith("dropin_caffe: ")][0]
        assert line.startswith("dropin_caffe: " + message) and "lr_mult: 0 decay_mult: 0" in line
        return
    with pytest.raises(ConfigError, match=r"DropIn 'drop': its iteration counter .* not whole numbers.*"
                                          r"lr_mult: 0 decay_mult: 0"):
        caffe.Net(path, caffe.TRAIN, weights=weights).forward()
    assert "dropin_caffe: " + message in capfd.readouterr().err


@pytest.mark.parametrize("param_str,message", [
    ('{"name": "d", "length": -5}', '''DropIn 'd': "length" must be an integer >= 1, got -5'''),
    ('{"name": "d", "length": 2.5}', '''DropIn 'd': "length" must be an integer >= 1, got 2.5'''),
    ('{"name": "d"}', '''DropIn 'd': mode "gradual" needs "length" in param_str'''),
    ('{"name": "d", "mode": "regularize"}', '''DropIn 'd': mode "regularize" needs "p_new" in param_str'''),
    ('{"name": "d", "mode": "regularize", "p_new": 1.5}', '''"p_new" must be a number with 0 < value <= 1, got 1.5'''),
    ('{"name": "d", "mode": "regularize", "p_new": 0}', '''"p_new" must be a number with 0 < value <= 1, got 0'''),
    ('{"name": "d", "length": 5, "p_new": 0.5}', '''DropIn 'd': "p_new" has no meaning in mode "gradual"'''),
    ('{"name": "d", "mode": "fast", "length": 5}', '''"mode" must be one of "gradual", "regularize", got "fast"'''),
    ('{"name": "d", "length": 5, "test": "mean"}',
     '''"test" must be one of "expectation", "new", "prev", got "mean"'''),
    ('{"name": "d", "length": 5, "train": "mix"}', '''"train" must be one of "select", "blend", got "mix"'''),
    ('{"name": "d", "length": 5, "lenght": 5}', '''DropIn 'd': unknown key "lenght" in param_str; known keys: '''),
    ('{"name": "d", "length": 5, "seed": -1}', '''"seed" must be an integer >= 0, got -1'''),
    ('{"name": "d", "length": 5, "iter_size": 0}', '''"iter_size" must be an integer >= 1, got 0'''),
    ('{"length": 0}', '''DropIn (param_str '{"length": 0}'): "length" must be an integer >= 1, got 0'''),
    ("length=5", "DropIn: param_str must be a JSON object"),
    ("[5]", "DropIn: param_str must be a JSON object"),
    ('{"name": "d", "length": "__import__(os).getcwd()"}', '"length" must be an integer >= 1, got "__import__'),
])
def test_dropin_bad_parameters_stop_setup_with_the_rule(write, impl, capfd, param_str, message):
    path = write("bad.prototxt", dropin_text(impl, (1, 3), param_str))
    expect_failure(impl, capfd, path, message)


def test_dropin_shape_mismatch_says_to_insert_a_resize(write, impl, capfd):
    path = write("bad.prototxt", dropin_text(impl, (2, 3, 4, 4), '{"name": "drop", "length": 3}',
                                              second_shape=(2, 5, 4, 4)))
    expect_failure(impl, capfd, path, "DropIn 'drop': bottoms prev and new must have the same shape, "
                                      "got (2, 3, 4, 4) and (2, 5, 4, 4); insert a Resize layer")


@pytest.mark.parametrize("bottoms,tops,message", [
    (["a"], ["out"], "DropIn 'drop': takes 2 bottoms (prev, new), got 1"),
    (["a", "b"], ["x", "y", "z"], "takes 1 or 2 tops (the output, and optionally p), got 3"),
])
def test_dropin_bottom_and_top_counts(write, impl, capfd, bottoms, tops, message):
    text = input_layer("a", (1, 2)) + input_layer("b", (1, 2))
    text += our_layer(impl, "drop", "DropIn", bottoms, tops, '{"name": "drop", "length": 3}')
    expect_failure(impl, capfd, write("counts.prototxt", text), message)


@pytest.mark.parametrize("shape,param_str,expected", [
    ((2, 3, 5, 7), '{"height": 10}', (2, 3, 10, 7)),
    ((2, 3, 5, 7), '{"width": 4}', (2, 3, 5, 4)),
    ((1, 3, 6, 6), '{"height": 3, "width": 11, "interp": "nearest"}', (1, 3, 3, 11)),
    ((1, 2, 9, 9), '{"height": 3, "width": 4, "interp": "nearest"}', (1, 2, 3, 4)),
    ((2, 3, 5, 5), '{"channels": 6}', (2, 6, 5, 5)),
    ((2, 6, 4, 4), '{"channels": 2, "height": 9, "width": 9}', (2, 2, 9, 9)),
    ((1, 8), '{"channels": 5}', (1, 5)),
    ((3, 5), '{"channels": 8}', (3, 8)),
])
def test_resize_shapes_and_gradients(write, impl, shape, param_str, expected):
    net = resize_net(write, impl, shape, param_str)
    fill(net)
    check_gradients(net)
    assert net.blobs["out"].data.shape == expected


def test_resize_target_from_a_second_bottom(write, impl):
    net = resize_net(write, impl, (2, 3, 4, 4), "", target_shape=(5, 6, 8, 2))
    net.blobs["x"].data[...] = 1
    out = net.forward()["out"]
    assert out.shape == (2, 6, 8, 2)
    np.testing.assert_allclose(out[:, :3], 1, rtol=1e-6)
    assert not out[:, 3:].any()
    net.blobs["out"].diff[...] = 1
    net.backward()
    assert not net.blobs["target"].diff.any()


@pytest.mark.parametrize("param_str,shape", [
    ('{"channels": 4, "height": 9, "width": 3}', (2, 4, 9, 3)),
    ('{"channels": 2, "height": 4, "width": 13, "interp": "nearest"}', (2, 2, 4, 13)),
])
def test_resize_matches_the_kernel(write, impl, param_str, shape):
    from dropin_caffe import kernels
    net = resize_net(write, impl, (2, 3, 5, 5), param_str)
    fill(net)
    interp = "nearest" if "nearest" in param_str else "bilinear"
    expected = kernels.resize_forward(net.blobs["x"].data.copy(), shape, interp)
    np.testing.assert_allclose(net.forward()["out"], expected, rtol=1e-6, atol=1e-7)
    net.blobs["out"].diff[...] = np.random.default_rng(2).standard_normal(shape)
    net.backward()
    expected = kernels.resize_backward(net.blobs["out"].diff.copy(), (2, 3, 5, 5), interp)
    np.testing.assert_allclose(net.blobs["x"].diff, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape,param_str,target,message", [
    ((1, 3, 4, 4), '{"name": "r", "height": 0}', None, '''Resize 'r': "height" must be an integer >= 1, got 0'''),
    ((1, 3, 4, 4), '{"name": "r", "interp": "cubic"}', None,
     '''"interp" must be one of "bilinear", "nearest", got "cubic"'''),
    ((1, 3, 4, 4), '{"name": "r", "size": 3}', None, '''Resize 'r': unknown key "size"'''),
    ((1, 3), '{"name": "r", "height": 3}', None,
     '''Resize 'r': "height" and "width" need a 4-D bottom, got shape (1, 3)'''),
    ((1, 3, 4), '{"name": "r"}', None, "Resize 'r': resizes (N, C) or (N, C, H, W) blobs, got shape (1, 3, 4)"),
    ((1, 3, 4, 4), '{"name": "r", "width": 3}', (1, 3, 2, 2), "Resize 'r': the target comes from the second bottom"),
    ((1, 3, 4, 4), '{"name": "r"}', (1, 3), "Resize 'r': the second bottom must have as many axes as the first"),
])
def test_resize_errors(write, impl, capfd, shape, param_str, target, message):
    path = write("bad.prototxt", resize_text(impl, shape, param_str, target))
    expect_failure(impl, capfd, path, message)


def test_python_resize_beyond_int_max_elements_is_our_error_not_a_caffe_abort(write, capfd):
    """Built straight in Caffe (no inference first): the layer refuses the top before Blob::Reshape
    would CHECK-fail and abort the process."""
    path = write("huge.prototxt", resize_text("python", (2, 3, 8, 8), '{"name": "r", "height": 50000, "width": 50000}'))
    expect_failure("python", capfd, path, "Resize 'r': the top would have 15000000000 elements")
