"""DropIn under the real `caffe train` command line: schedule, TEST sharing, resume, iter_size, errors.

Each test writes a tiny DummyData net and its solver, runs `caffe train` in a subprocess with glog
on stderr, and reads the p values Caffe logs ("Train net output #1: p = 0.025") and the counter
saved in the .caffemodel snapshots. What Caffe 1.0's solver does, as its logs show:

- iteration i (0-based) forwards TRAIN with the counter at i * iter_size, so it logs p = i / L;
- a test at iteration k runs before iteration k trains, so the TEST net sees the counter at k;
- the snapshot after the last iteration N is written before anything else runs: it holds N;
- then, only if `display` divides N, one more TRAIN forward (the log's "Iteration N, loss = ...")
  runs before the final test, which therefore sees N + 1 forward passes.

Each test runs with the Python layer and with the native one (type "DropIn", the library
LD_PRELOADed into `caffe`, as `tools/caffe-env run caffe` does).
"""
import os
import re
import subprocess

import pytest

from conftest import HAS_CAFFE, TINY_LAYERS, input_layer, our_layer, python_layer
from dropin_caffe.errors import ConfigError

pytestmark = pytest.mark.caffe  # every test runs `caffe train`
if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe

LENGTH = 40
MAX_ITER = 20
TEST_INTERVAL = 5
FREEZE_FIX = "lr_mult: 0 decay_mult: 0"

DATA_AND_LAYERS = 'name: "dropin_tiny"\n' + TINY_LAYERS
LOSS = 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "joined" bottom: "label" top: "loss" }\n'


def tiny_net(directory, param_str, counter=True, impl="python"):
    """DummyData -> prev -> new, joined by the DropIn "dropin" (second top p, loss_weight 0), a loss."""
    dropin = our_layer(impl, "dropin", "DropIn", ["prev", "new"], ["joined", "p"], param_str, counter)
    dropin = dropin.replace("  python_param", "  loss_weight: 0 loss_weight: 0\n  python_param", 1)
    path = os.path.join(str(directory), "net.prototxt")
    with open(path, "w") as out:
        out.write(DATA_AND_LAYERS + dropin + LOSS)
    return path


def solver(directory, net, max_iter=MAX_ITER, display=1, iter_size=1, name="solver"):
    """A CPU SGD solver with weight decay; its one snapshot, after training, is <directory>/snap_iter_N.*"""
    path = os.path.join(str(directory), name + ".prototxt")
    with open(path, "w") as out:
        out.write('net: "%s"\nbase_lr: 0.01\nlr_policy: "fixed"\nmomentum: 0.9\nweight_decay: 0.0005\n'
                  "max_iter: %d\niter_size: %d\ntest_iter: 1\ntest_interval: %d\ndisplay: %d\n"
                  'snapshot_prefix: "%s"\nsolver_mode: CPU\n'
                  % (net, max_iter, iter_size, TEST_INTERVAL, display,
                     os.path.join(str(directory), "snap")))
    return path


def caffe_train(impl, *args):
    """Run `caffe train ARGS`; glog goes to stderr only (no log files), at INFO level."""
    environ = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    if impl == "native":
        from dropin_caffe import native
        environ["LD_PRELOAD"] = native.path()
    return subprocess.run(["caffe", "train"] + list(args), env=environ, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, timeout=120)


ITERATION = re.compile(r"\] Iteration (\d+)\b")
P_OUTPUT = re.compile(r"\] +(Train|Test) net output #\d+: p = (\S+)$")


def logged_p(log):
    """({iteration: p} from Train net outputs, {iteration: p} from Test net outputs) of a caffe log."""
    seen = {"Train": {}, "Test": {}}
    iteration = None
    for line in log.splitlines():
        found = ITERATION.search(line)
        if found:
            iteration = int(found.group(1))
            continue
        found = P_OUTPUT.search(line)
        if found:
            seen[found.group(1)][iteration] = float(found.group(2))
    return seen["Train"], seen["Test"]


def saved_count(net, caffemodel):
    """The DropIn counter in a snapshot, and the p its TEST net outputs with those weights."""
    test_net = caffe.Net(net, caffe.TEST, weights=caffemodel)
    low, high = (float(v) for v in test_net.params["dropin"][0].data)
    assert low.is_integer() and high.is_integer()
    return int(high) * 2 ** 22 + int(low), float(test_net.forward()["p"][0])


def schedule(iterations):
    return {i: pytest.approx(i / LENGTH, abs=1e-6) for i in iterations}


def snapshots(directory):
    return sorted(name for name in os.listdir(str(directory)) if name.startswith("snap"))


@pytest.fixture(scope="module", params=["python", "native"])
def full_run(request, tmp_path_factory):
    """MAX_ITER iterations from scratch with display 1: (net path, directory, finished process, impl)."""
    if request.param == "native":
        request.getfixturevalue("native_library")
    directory = tmp_path_factory.mktemp("full")
    net = tiny_net(directory, '{"name": "dropin", "length": %d}' % LENGTH, impl=request.param)
    run = caffe_train(request.param, "--solver=" + solver(directory, net))
    assert run.returncode == 0, run.stderr[-3000:]
    return net, directory, run, request.param


def test_snapshot_after_n_iterations_holds_counter_n(full_run):
    net, directory, _, _ = full_run
    assert snapshots(directory) == ["snap_iter_%d.caffemodel" % MAX_ITER, "snap_iter_%d.solverstate" % MAX_ITER]
    count, test_p = saved_count(net, str(directory / ("snap_iter_%d.caffemodel" % MAX_ITER)))
    assert count == MAX_ITER
    assert test_p == pytest.approx(MAX_ITER / LENGTH)


def test_train_net_logs_schedule_at_every_iteration(full_run):
    train, _ = logged_p(full_run[2].stderr)
    assert train == schedule(range(MAX_ITER))


def test_test_net_follows_train_counter_at_each_interval(full_run):
    _, test = logged_p(full_run[2].stderr)
    intervals = range(0, MAX_ITER, TEST_INTERVAL)
    expected = schedule(intervals)
    # display (1) divides max_iter, so the extra display forward runs first: the final test sees N + 1
    expected[MAX_ITER] = pytest.approx((MAX_ITER + 1) / LENGTH, abs=1e-6)
    assert test == expected


def test_final_test_sees_counter_n_when_display_does_not_divide_max_iter(tmp_path, impl):
    net = tiny_net(tmp_path, '{"name": "dropin", "length": %d}' % LENGTH, impl=impl)
    run = caffe_train(impl, "--solver=" + solver(tmp_path, net, display=3))
    assert run.returncode == 0, run.stderr[-3000:]
    train, test = logged_p(run.stderr)
    assert train == schedule(range(0, MAX_ITER, 3))
    assert test == schedule(range(0, MAX_ITER + 1, TEST_INTERVAL))
    assert saved_count(net, str(tmp_path / ("snap_iter_%d.caffemodel" % MAX_ITER)))[0] == MAX_ITER


def test_resume_from_solverstate_continues_schedule(tmp_path, full_run):
    impl = full_run[3]
    half = MAX_ITER // 2
    net = tiny_net(tmp_path, '{"name": "dropin", "length": %d}' % LENGTH, impl=impl)
    first = caffe_train(impl, "--solver=" + solver(tmp_path, net, max_iter=half, name="first"))
    assert first.returncode == 0, first.stderr[-3000:]
    # the first run ends with an extra display forward (counter half + 1); the snapshot holds half
    assert logged_p(first.stderr)[1][half] == pytest.approx((half + 1) / LENGTH)
    assert saved_count(net, str(tmp_path / ("snap_iter_%d.caffemodel" % half)))[0] == half

    resumed = caffe_train(impl, "--solver=" + solver(tmp_path, net, name="resumed"),
                          "--snapshot=" + str(tmp_path / ("snap_iter_%d.solverstate" % half)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    train, test = logged_p(resumed.stderr)
    assert train == schedule(range(half, MAX_ITER))
    assert train == {i: p for i, p in logged_p(full_run[2].stderr)[0].items() if i >= half}
    expected = schedule(range(half, MAX_ITER, TEST_INTERVAL))
    expected[MAX_ITER] = pytest.approx((MAX_ITER + 1) / LENGTH, abs=1e-6)
    assert test == expected
    assert saved_count(net, str(tmp_path / ("snap_iter_%d.caffemodel" % MAX_ITER)))[0] == MAX_ITER


def test_iter_size_2_counts_solver_iterations(tmp_path, impl):
    net = tiny_net(tmp_path, '{"name": "dropin", "length": %d, "iter_size": 2}' % LENGTH, impl=impl)
    run = caffe_train(impl, "--solver=" + solver(tmp_path, net, iter_size=2))
    assert run.returncode == 0, run.stderr[-3000:]
    train, test = logged_p(run.stderr)
    assert train == schedule(range(MAX_ITER))
    # the final test sees 2N + 1 forward passes, still solver iteration N
    assert test == schedule(range(0, MAX_ITER + 1, TEST_INTERVAL))
    count, test_p = saved_count(net, str(tmp_path / ("snap_iter_%d.caffemodel" % MAX_ITER)))
    assert count == 2 * MAX_ITER
    assert test_p == pytest.approx(MAX_ITER / LENGTH)  # not 2 N / L


def test_counter_left_to_the_solver_stops_training_with_the_fix(tmp_path, impl):
    net = tiny_net(tmp_path, '{"name": "dropin", "length": %d}' % LENGTH, counter=False, impl=impl)
    run = caffe_train(impl, "--solver=" + solver(tmp_path, net))
    assert run.returncode != 0
    assert "dropin_caffe: DropIn 'dropin': its iteration counter (parameter blob) holds 0.99" in run.stderr
    assert FREEZE_FIX in run.stderr.split("dropin_caffe: ")[1]
    # weight decay made the counter fractional in the first update: iteration 1 never trains
    assert logged_p(run.stderr) == ({0: 0.0}, {0: 0.0})
    assert "Optimization Done" not in run.stderr
    assert snapshots(tmp_path) == []


def test_bad_param_str_message_reaches_caffe_train_user(tmp_path, impl):
    net = tiny_net(tmp_path, '{"name": "dropin", "length": 0}', impl=impl)
    run = caffe_train(impl, "--solver=" + solver(tmp_path, net))
    assert run.returncode != 0
    assert 'dropin_caffe: DropIn \'dropin\': "length" must be an integer >= 1, got 0\n' in run.stderr
    assert "Starting Optimization" not in run.stderr
    assert snapshots(tmp_path) == []


def test_bad_param_str_raises_config_error_in_pycaffe(write, capfd):
    text = input_layer("prev", (2, 3)) + input_layer("new", (2, 3))
    text += python_layer("dropin", "DropIn", ["prev", "new"], ["joined"], '{"name": "dropin", "length": 0}')
    path = write("bad.prototxt", text)
    message = 'DropIn \'dropin\': "length" must be an integer >= 1, got 0'
    with pytest.raises(ConfigError) as raised:
        caffe.Net(path, caffe.TRAIN)
    assert str(raised.value) == message
    assert "dropin_caffe: %s\n" % message in capfd.readouterr().err


def test_resume_keeps_counter_exact_past_float32_integers(tmp_path, impl):
    half = MAX_ITER // 2
    net = tiny_net(tmp_path, '{"name": "dropin", "length": %d}' % LENGTH, impl=impl)
    first = caffe_train(impl, "--solver=" + solver(tmp_path, net, max_iter=half, name="first"))
    assert first.returncode == 0, first.stderr[-3000:]
    caffemodel = str(tmp_path / ("snap_iter_%d.caffemodel" % half))
    start = 5 * 2 ** 22 - 3  # past 2**24, where float32 no longer holds every whole number
    trained = caffe.Net(net, caffe.TRAIN, weights=caffemodel)
    trained.params["dropin"][0].data[...] = (start % 2 ** 22, start // 2 ** 22)
    trained.save(caffemodel)

    resumed = caffe_train(impl, "--solver=" + solver(tmp_path, net, name="resumed"),
                          "--snapshot=" + str(tmp_path / ("snap_iter_%d.solverstate" % half)))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert logged_p(resumed.stderr)[0] == {i: 1.0 for i in range(half, MAX_ITER)}
    count, _ = saved_count(net, str(tmp_path / ("snap_iter_%d.caffemodel" % MAX_ITER)))
    assert count == start + MAX_ITER - half
