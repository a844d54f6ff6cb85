"""Caffe log parsing: real `caffe train` logs produced here, and hand-written ones in other formats.

The "known" nets make every logged value computable by hand: constant DummyData logits
prev = [1, 0] and new = [0, 1], joined by a DropIn (length 12). The TEST net's DropIn outputs the
expectation (1 - p) prev + p new = [1 - p, p], so with label 0 its loss is ln(1 + e^(2p - 1)) and
its accuracy 1 while p < 1/2; the train loss is taken on prev alone, ln(1 + e^-1), and a second
test net scores prev against label 1: loss ln(1 + e), accuracy 0.
"""
import csv
import gzip
import math
import os
import re
import subprocess
import textwrap
import time

import pytest

from conftest import TINY_LAYERS, python_layer
from dropin_caffe.errors import ConfigError
from dropin_caffe.experiments.logs import (
    FIXED_COLUMNS,
    csv_columns,
    is_dropin_p,
    parse_log,
    read_log,
    rows_for,
    write_csv,
)

LENGTH = 12


def loss_of(logits, label):
    """Softmax loss of one sample, by hand."""
    return math.log(sum(math.exp(v) for v in logits)) - logits[label]


def known_p(counter):
    return min(1.0, counter / LENGTH)


def known_net(path, label, test_dropin):
    """The constant-logit net; `test_dropin` scores the DropIn's expectation, else prev (see module doc)."""
    text = """\
        name: "known"
        layer { name: "data" type: "DummyData" top: "one" top: "zero" top: "label"
          dummy_data_param { shape { dim: 4 dim: 1 } shape { dim: 4 dim: 1 } shape { dim: 4 }
            data_filler { type: "constant" value: 1 } data_filler { type: "constant" value: 0 }
            data_filler { type: "constant" value: %d } } }
        layer { name: "prev" type: "Concat" bottom: "one" bottom: "zero" top: "prev" }
        layer { name: "new" type: "Concat" bottom: "zero" bottom: "one" top: "new" }
        """ % label
    text = textwrap.dedent(text)
    if test_dropin is not None:
        dropin = python_layer("d1", "DropIn", ["prev", "new"], ["joined", "d1_p"],
                              '{"name": "d1", "length": %d}' % LENGTH)
        text += dropin.replace("  python_param", "  loss_weight: 0 loss_weight: 0\n  python_param", 1)
    else:
        text += 'layer { name: "silence" type: "Silence" bottom: "new" }\n'
    scored = "joined" if test_dropin else "prev"
    if test_dropin is False:
        text += 'layer { name: "silence" type: "Silence" bottom: "joined" }\n'
    text += 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "%s" bottom: "label" top: "loss" }\n' % scored
    if test_dropin is not False:
        text += 'layer { name: "accuracy" type: "Accuracy" bottom: "%s" bottom: "label" top: "accuracy" }\n' % scored
    with open(path, "w") as out:
        out.write(text)
    return path


RANDOM_NET = 'name: "random"\n' + TINY_LAYERS + """\
%s
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "joined" bottom: "label" top: "loss" }
layer { name: "accuracy" type: "Accuracy" bottom: "joined" bottom: "label" top: "accuracy"
  include { phase: TEST } }
"""


def caffe_train(*args):
    """(caffe train's glog text, wall-clock seconds the process took)."""
    environ = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    began = time.time()
    run = subprocess.run(["caffe", "train"] + list(args), env=environ, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, universal_newlines=True, timeout=120)
    assert run.returncode == 0, run.stdout[-3000:]
    return run.stdout, time.time() - began


def write_solver(path, lines):
    with open(path, "w") as out:
        out.write("\n".join(lines) + '\nlr_policy: "fixed"\nsolver_mode: CPU\n')
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every real log the tests read: {name: (log text, path, seconds)}."""
    directory = tmp_path_factory.mktemp("logs")
    made = {}

    def keep(name, text, seconds):
        path = str(directory / (name + ".log"))
        with open(path, "w") as out:
            out.write(text)
        made[name] = (text, path, seconds)

    train = known_net(str(directory / "train.prototxt"), 0, False)
    test0 = known_net(str(directory / "test0.prototxt"), 0, True)
    test1 = known_net(str(directory / "test1.prototxt"), 1, None)
    keep("two_tests", *caffe_train("--solver=" + write_solver(str(directory / "two_tests.prototxt"), [
        'train_net: "%s"' % train, 'test_net: "%s"' % test0, 'test_net: "%s"' % test1,
        "test_iter: 2", "test_iter: 2", "test_interval: 5", "display: 1", "max_iter: 15", "base_lr: 0",
        'snapshot_prefix: "%s"' % (directory / "known")])))
    keep("no_test", *caffe_train("--solver=" + write_solver(str(directory / "no_test.prototxt"), [
        'train_net: "%s"' % train, "display: 2", "max_iter: 6", "base_lr: 0",
        'snapshot_prefix: "%s"' % (directory / "notest")])))

    dropin = python_layer("d1", "DropIn", ["prev", "new"], ["joined", "d1_p"], '{"name": "d1", "length": 20}')
    dropin = dropin.replace("  python_param", "  loss_weight: 0 loss_weight: 0\n  python_param", 1)
    net = str(directory / "random.prototxt")
    with open(net, "w") as out:
        out.write(RANDOM_NET % dropin)
    common = ['net: "%s"' % net, "test_iter: 1", "test_interval: 10", "display: 5", "base_lr: 0.01",
              "momentum: 0.9", 'snapshot_prefix: "%s"' % (directory / "random")]
    keep("first", *caffe_train("--solver=" + write_solver(str(directory / "first.prototxt"),
                                                          common + ["max_iter: 10"])))
    keep("resumed", *caffe_train("--solver=" + write_solver(str(directory / "resumed.prototxt"),
                                                            common + ["max_iter: 20"]),
                                 "--snapshot=" + str(directory / "random_iter_10.solverstate")))
    keep("appended", made["first"][0] + made["resumed"][0], made["first"][2] + made["resumed"][2])
    return made


def logged(name, runs):
    return read_log(runs[name][1])


def approx(value, nan_ok=False):
    return pytest.approx(value, rel=2e-5, abs=1e-6, nan_ok=nan_ok)  # Caffe prints 6 significant digits


# real logs, values by hand

@pytest.mark.caffe
def test_two_test_nets_every_value_by_hand(runs):
    log = logged("two_tests", runs)
    assert log.train_loss == {i: approx(loss_of([1, 0], 0)) for i in range(16)}
    # display 1 divides max_iter: one more TRAIN forward before the final test, which sees counter 16
    counters = {0: 0, 5: 5, 10: 10, 15: 16}
    assert log.test_outputs() == {
        (0, "accuracy"): {i: (1.0 if known_p(c) < 0.5 else 0.0) for i, c in counters.items()},
        (0, "d1_p"): {i: approx(known_p(c)) for i, c in counters.items()},
        (0, "loss"): {i: approx(loss_of([1 - known_p(c), known_p(c)], 0)) for i, c in counters.items()},
        (1, "accuracy"): {i: 0.0 for i in counters},
        (1, "loss"): {i: approx(loss_of([1, 0], 1)) for i in counters},
    }
    assert log.outputs("train") == {(0, "d1_p"): {i: approx(known_p(i)) for i in range(15)},
                                    (0, "loss"): {i: approx(loss_of([1, 0], 0)) for i in range(15)}}
    assert log.dropin_names == ["d1_p"]
    # TRAIN's p where it trained (0..14), the final test's where it did not (15)
    assert log.dropin_p() == {"d1_p": {**{i: approx(known_p(i)) for i in range(15)}, 15: 1.0}}
    assert log.finished and log.runs == 1 and log.resumed_from == []
    assert [os.path.basename(s) for s in log.snapshots] == ["known_iter_15.caffemodel"]
    assert log.iterations == list(range(16))


@pytest.mark.caffe
def test_records_keep_phase_net_and_log_order(runs):
    log = logged("two_tests", runs)
    assert len(log.records) == 15 * 2 + 4 * (3 + 2)
    first_test = [r for r in log.records if r.iteration == 0 and r.phase == "test"]
    assert [(r.net, r.name) for r in first_test] == [(0, "accuracy"), (0, "d1_p"), (0, "loss"),
                                                     (1, "accuracy"), (1, "loss")]
    assert all(r.net == 0 for r in log.records if r.phase == "train")


@pytest.mark.caffe
def test_reported_speed_and_timestamp_speed(runs):
    text, _, seconds = runs["two_tests"]
    log = logged("two_tests", runs)
    # Caffe 1.0 prints "(N iter/s, Ts/1 iters)" on every Iteration line but the last
    assert sorted(log.reported_speed) == list(range(15))
    shown = re.findall(r"Iteration (\d+) \((\S+) iter/s", text)
    assert log.reported_speed == {int(i): approx(float(v), nan_ok=True) for i, v in shown}  # "-nan" on a 0 s lapse
    # the timestamps span no more than the process lived: 15 iterations in at most `seconds`
    assert log.iterations_per_second >= 15 / seconds


@pytest.mark.caffe
def test_no_test_phase(runs):
    log = logged("no_test", runs)
    assert log.train_loss == {i: approx(loss_of([1, 0], 0)) for i in (0, 2, 4, 6)}
    assert log.test_outputs() == {}
    assert log.dropin_p() == {"d1_p": {i: approx(known_p(i)) for i in (0, 2, 4)}}
    assert log.finished and log.iterations == [0, 2, 4, 6]
    assert log.iterations_per_second > 0


# real logs, random nets: a resumed run, and the two logs appended into one

@pytest.mark.caffe
def test_display_5_and_resume(runs):
    first, resumed = logged("first", runs), logged("resumed", runs)
    assert sorted(first.train_loss) == [0, 5, 10] and sorted(resumed.train_loss) == [10, 15, 20]
    assert first.dropin_p()["d1_p"] == {0: 0.0, 5: approx(0.25), 10: approx(0.55)}  # final test: 11 / 20
    assert resumed.dropin_p()["d1_p"] == {10: approx(0.5), 15: approx(0.75), 20: approx(min(1, 21 / 20))}
    # a resumed run tests at its first iteration when the interval divides it
    assert sorted(resumed.test_outputs()[(0, "accuracy")]) == [10, 20]
    assert resumed.resumed_from == [os.path.join(os.path.dirname(runs["resumed"][1]), "random_iter_10.solverstate")]
    assert first.finished and resumed.finished and (first.runs, resumed.runs) == (1, 1)
    for name in ("first", "resumed"):
        text = runs[name][0]
        log = logged(name, runs)
        for iteration, loss in log.train_loss.items():  # each value is on its own Iteration line
            assert re.search(r"Iteration %d( \(.*\))?, loss = %s\n" % (iteration, re.escape("%g" % loss)), text)
        for (net, output), series in log.test_outputs().items():
            for iteration, value in series.items():
                assert re.search(r"Iteration %d, Testing net \(#%d\)\n(.*\n)*?.*Test net output #\d+: %s = %s\b"
                                 % (iteration, net, output, re.escape("%g" % value)), text)


@pytest.mark.caffe
def test_appended_resume_supersedes_what_the_first_run_logged_from_its_start(runs):
    first, resumed, both = logged("first", runs), logged("resumed", runs), logged("appended", runs)
    assert both.runs == 2 and both.finished
    assert both.records == [r for r in first.records if r.iteration < 10] + resumed.records
    assert both.train_loss == {**first.train_loss, **resumed.train_loss}
    assert both.train_loss[10] == resumed.train_loss[10]
    assert both.dropin_p() == {"d1_p": {**first.dropin_p()["d1_p"], **resumed.dropin_p()["d1_p"]}}
    assert both.dropin_p()["d1_p"][10] == approx(0.5)  # the resumed run's, not the first's final test (0.55)
    for key, series in both.test_outputs().items():
        assert series == {**first.test_outputs()[key], **resumed.test_outputs()[key]}
    assert both.snapshots == first.snapshots + resumed.snapshots
    assert both.iterations == [0, 5, 10, 15, 20]


# hand-written logs: no timestamps, glog with years, odd values

PLAIN = """\
Solving LeNet
Iteration 0, Testing net (#0)
    Test net output #0: accuracy = 0.1
    Test net output #1: loss = 2.30259 (* 1 = 2.30259 loss)
Iteration 0, Testing net (#1)
    Test net output #0: accuracy = 0.125
Iteration 0 (0 iter/s, 0s/100 iters), loss = 2.31
    Train net output #0: loss = 2.31 (* 1 = 2.31 loss)
Iteration 0, lr = 0.01
Iteration 100 (25 iter/s, 4s/100 iters), loss = 0.5
    Train net output #0: loss = 0.5 (* 1 = 0.5 loss)
Iteration 100, lr = 0.01
Iteration 200 (20 iter/s, 5s/100 iters), loss = -nan
    Train net output #0: loss = -nan (* 1 = -nan loss)
Iteration 200, Testing net (#0)
    Test net output #0: accuracy = 0.9
    Test net output #1: loss = 0.25 (* 1 = 0.25 loss)
Snapshotting to binary proto file lenet_iter_200.caffemodel
Optimization Done.
"""


def test_log_without_timestamps():
    log = parse_log(PLAIN)
    assert log.train_loss[0] == 2.31 and log.train_loss[100] == 0.5 and math.isnan(log.train_loss[200])
    assert log.test_outputs() == {(0, "accuracy"): {0: 0.1, 200: 0.9}, (0, "loss"): {0: 2.30259, 200: 0.25},
                                  (1, "accuracy"): {0: 0.125}}
    assert log.reported_speed == {0: 0.0, 100: 25.0, 200: 20.0}
    assert log.iterations_per_second == pytest.approx(200 / 9)  # lapses 4 s + 5 s; "0s" tells nothing
    assert log.dropin_p() == {}
    assert log.snapshots == ["lenet_iter_200.caffemodel"] and log.finished


def test_timestamps_with_year_and_new_year():
    text = """\
I20231231 23:59:58.000000  7 solver.cpp:239] Iteration 0 (1e+19 iter/s, 0s/50 iters), loss = 1
I20231231 23:59:59.500000  7 solver.cpp:239] Iteration 50 (1 iter/s, 0s/50 iters), loss = 0.5
I20240101 00:00:02.000000  7 solver.cpp:239] Iteration 100 (1 iter/s, 0s/50 iters), loss = 0.25
"""
    assert parse_log(text).iterations_per_second == pytest.approx(100 / 4)
    no_year = re.sub(r"I20\d\d", "I", text)
    log = parse_log(no_year)
    assert log.iterations_per_second == pytest.approx(100 / 4)
    assert log.train_loss == {0: 1.0, 50: 0.5, 100: 0.25}
    assert not log.finished


def test_appended_run_without_markers_restarts_where_iterations_go_back():
    first = "Iteration 0, loss = 4\nIteration 10, loss = 3\nIteration 20, loss = 2\nIteration 20, Testing net (#0)\n" \
            "    Test net output #0: accuracy = 0.5\n"
    second = "Iteration 10, loss = 2.5\nIteration 20, loss = 1.5\n"
    log = parse_log(first + second)
    assert log.train_loss == {0: 4.0, 10: 2.5, 20: 1.5}
    assert log.test_outputs() == {}  # the test at 20 belonged to the superseded run
    assert log.runs == 2 and not log.finished


def test_dropin_p_rule_and_outputs_before_any_iteration():
    text = """\
    Train net output #0: early_p = 0.5
Iteration 3, loss = 1
    Train net output #0: p = 0.5
    Train net output #1: gate_p = 2
    Train net output #2: conv2_1_dropin_p = 0.25
    Train net output #3: top_prob = 0.5
Iteration 3, Testing net (#0)
    Test net output #0: conv2_1_dropin_p = 0.25
"""
    log = parse_log(text)
    assert log.dropin_names == ["p", "conv2_1_dropin_p"]
    assert log.dropin_p() == {"p": {3: 0.5}, "conv2_1_dropin_p": {3: 0.25}}
    assert not any(r.name == "early_p" for r in log.records)
    assert is_dropin_p("x_p", [0, 1]) and not is_dropin_p("x_p", [float("nan")]) and not is_dropin_p("xp", [0.5])


def test_wrapped_glog_lines_and_glog_warnings_parse():
    text = ("[job 3] I1127 04:57:21.029316  3131 solver.cpp:239] Iteration 7, loss = 0.75\n"
            "W1127 04:57:22.029316  3131 solver.cpp:258]     Train net output #0: loss = 0.75 (* 1 = 0.75 loss)\n")
    log = parse_log(text)
    assert log.train_loss == {7: 0.75} and log.outputs("train") == {(0, "loss"): {7: 0.75}}


# reading files

def test_read_log_gz(tmp_path):
    path = str(tmp_path / "caffe.log.gz")
    with gzip.open(path, "wt") as out:
        out.write(PLAIN)
    assert read_log(path).test_outputs() == parse_log(PLAIN).test_outputs()
    assert read_log(path).source == path


@pytest.mark.parametrize("kind", ["missing", "directory", "not_a_log", "binary", "bad_gzip"])
def test_read_log_errors(tmp_path, kind):
    path = tmp_path / {"missing": "absent.log", "directory": "dir", "not_a_log": "notes.txt",
                       "binary": "weights.caffemodel", "bad_gzip": "caffe.log.gz"}[kind]
    if kind == "directory":
        path.mkdir()
    elif kind == "not_a_log":
        path.write_text("I1127 04:57:21.029316  3131 caffe.cpp:197] Use CPU.\nIteration counts are fun\n")
    elif kind in ("binary", "bad_gzip"):
        path.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError) as raised:
        read_log(str(path))
    message = str(raised.value)
    assert "\n" not in message and str(path) in message
    expected = {"missing": "does not exist", "directory": "cannot be read (Is a directory)",
                "not_a_log": "is not a Caffe training log", "binary": "is not a Caffe training log",
                "bad_gzip": "cannot be read"}[kind]
    assert expected in message


# CSV

@pytest.mark.caffe
def test_rows_for_columns_and_values(runs):
    log = logged("two_tests", runs)
    rows = rows_for(log, "known/seed3", "known", 3)
    assert len(rows) == 16 and [row["iteration"] for row in rows] == list(range(16))
    assert csv_columns(rows) == list(FIXED_COLUMNS) + ["test0/accuracy", "test0/loss", "test1/accuracy",
                                                        "test1/loss", "p/d1_p"]
    assert rows[5] == {"run": "known/seed3", "configuration": "known", "seed": 3, "iteration": 5,
                       "train_loss": log.train_loss[5], "test0/accuracy": 1.0,
                       "test0/loss": log.test_outputs()[(0, "loss")][5], "test1/accuracy": 0.0,
                       "test1/loss": log.test_outputs()[(1, "loss")][5], "p/d1_p": log.dropin_p()["d1_p"][5]}
    assert rows[6]["test0/accuracy"] is None and rows[6]["p/d1_p"] == approx(6 / LENGTH)
    assert rows[15]["p/d1_p"] == 1.0


@pytest.mark.caffe
def test_write_csv_round_trip_several_logs(tmp_path, runs):
    rows = rows_for(logged("two_tests", runs), "a", "known", 1) + rows_for(parse_log(PLAIN), "b", "lenet", 2)
    path = str(tmp_path / "table.csv")
    columns = write_csv(rows, path)
    assert columns == list(FIXED_COLUMNS) + ["test0/accuracy", "test0/loss", "test1/accuracy", "test1/loss",
                                             "p/d1_p"]
    with open(path, newline="") as stream:
        read = list(csv.DictReader(stream))
    assert list(read[0]) == columns and len(read) == 16 + 3
    assert os.listdir(str(tmp_path)) == ["table.csv"]
    for row, back in zip(rows, read):
        for column in columns:
            value = row.get(column)
            if isinstance(value, float):
                assert math.isnan(float(back[column])) if math.isnan(value) else float(back[column]) == value
            else:
                assert back[column] == ("" if value is None else str(value))
    assert read[-1]["p/d1_p"] == "" and read[-1]["train_loss"] == "nan" and read[-1]["test0/accuracy"] == "0.9"


def test_write_csv_leaves_nothing_when_it_fails(tmp_path):
    target = tmp_path / "missing_dir" / "table.csv"
    with pytest.raises(ConfigError, match="missing_dir"):
        write_csv(rows_for(parse_log(PLAIN), "b", "lenet", 2), str(target))
    assert os.listdir(str(tmp_path)) == []


@pytest.mark.parametrize("damage", ["truncated", "corrupt"])
def test_read_log_damaged_gz_is_one_line_config_error(tmp_path, damage):
    good = gzip.compress((PLAIN * 20).encode())
    data = {"truncated": good[:len(good) // 2],
            "corrupt": good[:12] + bytes(b ^ 0xFF for b in good[12:30]) + good[30:]}[damage]
    path = tmp_path / "caffe.log.gz"
    path.write_bytes(data)
    with pytest.raises(ConfigError) as raised:
        read_log(str(path))
    message = str(raised.value)
    assert "\n" not in message and message.startswith("log %s cannot be read (the gzip data is" % path)


@pytest.mark.caffe
def test_a_diverged_net_logs_accuracy_1_and_is_read_as_nan(tmp_path):
    """Caffe's Accuracy counts an image whose class scores are all NaN as right: a net that diverged
    logs accuracy 1. The reader masks every output of a test whose loss is not finite, marks the log
    diverged, and the summary neither reports nor plots the 1."""
    from dropin_caffe.experiments.plots import markdown_summary

    net = tmp_path / "nan.prototxt"
    net.write_text(textwrap.dedent("""\
        name: "nan"
        layer { name: "data" type: "DummyData" top: "x" top: "label"
          dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 }
            data_filler { type: "constant" value: nan } data_filler { type: "constant" value: 1 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "x" top: "scores"
          inner_product_param { num_output: 2 weight_filler { type: "gaussian" std: 0.1 } } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "scores" bottom: "label" top: "loss" }
        layer { name: "accuracy" type: "Accuracy" bottom: "scores" bottom: "label" top: "accuracy"
          include { phase: TEST } }
        """))
    text, _ = caffe_train("--solver=" + write_solver(str(tmp_path / "solver.prototxt"), [
        'net: "%s"' % net, "test_iter: 1", "test_interval: 2", "display: 1", "max_iter: 4", "base_lr: 0.01",
        'snapshot_prefix: "%s"' % (tmp_path / "nan")]))
    log = parse_log(text)
    raw = log.outputs("test")
    assert raw[0, "accuracy"] == {0: 1.0, 2: 1.0, 4: 1.0} and all(math.isnan(v) for v in raw[0, "loss"].values())
    assert all(math.isnan(v) for v in log.test_outputs()[0, "accuracy"].values())
    assert log.diverged and not parse_log("Iteration 0, loss = 1\nIteration 2, loss = 0.5\n").diverged
    row = markdown_summary({"nan": [log]}).splitlines()[2]
    assert row.startswith("| nan | 1 (1 diverged) | — | — | — |"), row
