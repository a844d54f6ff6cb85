"""Plots of parsed Caffe logs (Agg backend): what each Axes holds, the Markdown table, and the
tools/plot_log.py command line (its errors: one line, exit code 2, nothing written).

Most logs here are written by `caffe_log` in Caffe's glog format with chosen values, so means,
bands and bars can be checked by hand; one is a real `caffe train` log.
"""
import io
import os
import subprocess
import sys

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pytest

from conftest import REPO, python_layer
from dropin_caffe.cli.plot_log import main as plot_log_main
from dropin_caffe.errors import ConfigError
from dropin_caffe.experiments.logs import parse_log
from dropin_caffe.experiments.plots import (
    main_test_output,
    markdown_summary,
    plot_accuracy,
    plot_final_bars,
    plot_loss,
    plot_schedule,
    save_figure,
)


def caffe_log(accuracy=None, loss=None, p=None, seconds_per_iteration=0.01, finished=True, test_loss=None):
    """A Caffe 1.0 style log with these values: {iteration: value} for test accuracy (and test loss),
    train loss and a DropIn p ("dropin1_p", logged by TRAIN); timestamps at a steady rate."""
    def stamp(iteration):
        seconds = 3600 + iteration * seconds_per_iteration
        return "I0102 %02d:%02d:%09.6f  42 solver.cpp:239] " % (seconds // 3600, seconds % 3600 // 60, seconds % 60)

    lines = [stamp(0) + "Solving tiny"]
    for iteration in sorted(set(accuracy or {}) | set(loss or {}) | set(p or {})):
        if accuracy and iteration in accuracy:
            lines.append(stamp(iteration) + "Iteration %d, Testing net (#0)" % iteration)
            lines.append(stamp(iteration) + "    Test net output #0: accuracy = %g" % accuracy[iteration])
            if test_loss:
                lines.append(stamp(iteration) + "    Test net output #1: loss = %g (* 1 = %g loss)"
                             % (test_loss[iteration], test_loss[iteration]))
        if loss and iteration in loss:
            lines.append(stamp(iteration) + "Iteration %d (100 iter/s, 0.01s/1 iters), loss = %g"
                         % (iteration, loss[iteration]))
            if p and iteration in p:
                lines.append(stamp(iteration) + "    Train net output #0: dropin1_p = %g" % p[iteration])
    if finished:
        lines.append(stamp(max(loss or accuracy)) + "Optimization Done.")
    return "\n".join(lines) + "\n"


STEPS = (0, 10, 20)
P = {0: 0.0, 10: 0.5, 20: 1.0}


@pytest.fixture
def runs():
    """Two configurations of two seeds; the DropIn one logs p; seed b of "plain" runs at half speed."""
    return {
        "plain": [parse_log(caffe_log({0: 0.1, 10: 0.5, 20: 0.7}, {0: 2.0, 10: 1.0, 20: 0.5})),
                  parse_log(caffe_log({0: 0.2, 10: 0.6, 20: 0.8}, {0: 2.2, 10: 1.2, 20: 0.0},
                                      seconds_per_iteration=0.02))],
        "DropIn": [parse_log(caffe_log({0: 0.1, 10: 0.7, 20: 0.96}, {0: 2.0, 10: 0.8, 20: 0.4}, P)),
                   parse_log(caffe_log({0: 0.1, 10: 0.9, 20: 0.9}, {0: 2.0, 10: 0.6, 20: 0.2}, P,
                                       finished=False))],
    }


@pytest.fixture
def axes():
    figure, ax = plt.subplots()
    yield ax
    plt.close(figure)


def band_edges(collection):
    """[[x, lowest y, highest y], ...] of a fill_between band, by x."""
    edges = {}
    for x, y in collection.get_paths()[0].vertices:
        low, high = edges.get(x, (y, y))
        edges[x] = (min(low, y), max(high, y))
    return [[x, low, high] for x, (low, high) in sorted(edges.items())]


# plot_accuracy

def test_accuracy_mean_band_and_p_on_twin_axis(axes, runs):
    twin = plot_accuracy(axes, runs)
    assert [line.get_label() for line in axes.lines] == ["plain (2 seeds)", "DropIn (2 seeds)"]
    assert axes.lines[0].get_color() != axes.lines[1].get_color()
    for line in axes.lines:
        assert list(line.get_xdata()) == list(STEPS)
    assert np.allclose(axes.lines[0].get_ydata(), [0.15, 0.55, 0.75])
    assert np.allclose(axes.lines[1].get_ydata(), [0.1, 0.8, 0.93])
    assert len(axes.collections) == 2
    assert np.allclose(band_edges(axes.collections[0]), [[0, 0.1, 0.2], [10, 0.5, 0.6], [20, 0.7, 0.8]])
    assert np.allclose(band_edges(axes.collections[1]), [[0, 0.1, 0.1], [10, 0.7, 0.9], [20, 0.9, 0.96]])
    assert axes.get_ylabel() == "test accuracy" and axes.get_xlabel() == "iteration"
    # p(t): only the DropIn configuration has it, dashed, in its colour, on the twin axis
    assert twin is not None and twin in axes.figure.axes
    assert len(twin.lines) == 1
    assert twin.lines[0].get_linestyle() == "--" and twin.lines[0].get_color() == axes.lines[1].get_color()
    assert list(twin.lines[0].get_ydata()) == [0.0, 0.5, 1.0]
    assert [t.get_text() for t in twin.get_legend().get_texts()] == [
        "plain (2 seeds)", "DropIn (2 seeds)", "DropIn p(t), right axis"]


def test_accuracy_other_output_single_seed_and_uneven_iterations(axes):
    short = parse_log(caffe_log({0: 0.2, 10: 0.4}, {0: 2, 10: 1}, test_loss={0: 3.0, 10: 1.0}))
    longer = parse_log(caffe_log({0: 0.4, 10: 0.6, 20: 0.9}, {0: 2, 10: 1, 20: 1},
                                 test_loss={0: 2.0, 10: 2.0, 20: 0.5}))
    twin = plot_accuracy(axes, {"one": [short], "two": [short, longer]}, output="test0/loss")
    assert twin is None and axes.get_legend() is not None
    assert axes.get_ylabel() == "test loss"
    assert axes.lines[0].get_label() == "one" and np.allclose(axes.lines[0].get_ydata(), [3.0, 1.0])
    assert list(axes.lines[1].get_xdata()) == [0, 10, 20]
    assert np.allclose(axes.lines[1].get_ydata(), [2.5, 1.5, 0.5])  # iteration 20: the longer seed alone
    assert len(axes.collections) == 1  # one seed: no band


def test_a_few_p_layers_are_the_first_middle_and_last_in_layer_order_and_are_named(axes):
    """Issue 25: 100 DropIns make 100 dashed lines; p_layers=3 draws layers 1, 6 and 11 of 11 (not the
    log's alphabetical order, where conv2_10 comes before conv2_2), each named where it enters."""
    lines = ["Iteration 0, Testing net (#0)", "    Test net output #0: accuracy = 0.1"]
    for iteration in (0, 10, 20):
        lines.append("Iteration %d (1 iter/s, 1s/10 iters), loss = 1" % iteration)
        lines += ["    Train net output #%d: conv2_%d_dropin_p = %g" % (i, i, float(iteration >= i))
                  for i in sorted(range(1, 12), key=str)]
    log = parse_log("\n".join(lines) + "\n")
    twin = plot_accuracy(axes, {"DropIn": [log]}, p_layers=3)
    assert [list(line.get_ydata()) for line in twin.lines] == [[0, 1, 1], [0, 1, 1], [0, 0, 1]]
    assert [(t.get_text(), t.xy) for t in twin.texts] == [("conv2_1_dropin_p", (10, 0.5)),
                                                           ("conv2_6_dropin_p", (10, 0.5)),
                                                           ("conv2_11_dropin_p", (20, 0.5))]


def test_accuracy_without_any_test_output_is_an_error(axes):
    no_test = parse_log(caffe_log(loss={0: 2.0, 10: 1.0}))
    with pytest.raises(ConfigError) as raised:
        plot_accuracy(axes, {"a": [no_test]})
    assert str(raised.value) == "no test output in any log of a; plot the train loss instead (plot_loss)"
    assert list(axes.lines) == []  # matplotlib >= 3.5 gives an ArtistList, which is never == []


def test_main_test_output_prefers_accuracy_then_acc_then_first():
    def log(*names):
        return parse_log("Iteration 0, Testing net (#0)\n" + "".join(
            "    Test net output #%d: %s = 0.5\n" % (i, name) for i, name in enumerate(names)))
    assert main_test_output([log("a_p", "loss", "accuracy")]) == (0, "accuracy")
    assert main_test_output([log("loss", "top1_acc")]) == (0, "top1_acc")
    assert main_test_output([log("drop_p", "loss")]) == (0, "loss")
    assert main_test_output([log("drop_p")]) is None


# plot_loss and plot_final_bars

def test_loss_log_scale_mean_and_band_leave_out_non_positive(axes, runs):
    plot_loss(axes, runs)
    assert axes.get_yscale() == "log"
    assert [line.get_label() for line in axes.lines] == ["plain (2 seeds)", "DropIn (2 seeds)"]
    assert np.allclose(axes.lines[0].get_ydata(), [2.1, 1.1, 0.5])  # the 0.0 at 20 cannot be drawn on log
    assert np.allclose(axes.lines[1].get_ydata(), [2.0, 0.7, 0.3])
    assert np.allclose(band_edges(axes.collections[1]), [[0, 2.0, 2.0], [10, 0.6, 0.8], [20, 0.2, 0.4]])
    assert np.allclose(band_edges(axes.collections[0]), [[0, 2.0, 2.2], [10, 1.0, 1.2], [20, 0.5, 0.5]])


def test_given_colours_and_plain_tick_labels_under_a_decade(axes):
    narrow = parse_log(caffe_log({0: 0.5, 10: 0.6}, {0: 2.0, 10: 1.2}, P))
    plot_loss(axes, {"a": [narrow], "b": [narrow]}, colours={"b": "red"})
    assert axes.lines[1].get_color() == "red"
    assert axes.yaxis.get_major_formatter()(1.5) == "1.5"
    figure, ax = plt.subplots()
    twin = plot_accuracy(ax, {"a": [narrow], "b": [narrow]}, colours={"a": "black"})
    assert ax.lines[0].get_color() == twin.lines[0].get_color() == "black"
    plt.close(figure)


def test_final_bars_mean_error_bars_and_seed_points(axes, runs):
    plot_final_bars(axes, runs)
    assert [bar.get_height() for bar in axes.patches] == pytest.approx([0.75, 0.93])
    points = [c for c in axes.collections if isinstance(c, matplotlib.collections.PathCollection)]
    assert [sorted(c.get_offsets()[:, 1]) for c in points] == [pytest.approx([0.7, 0.8]), pytest.approx([0.9, 0.96])]
    bars = [c for c in axes.collections if isinstance(c, matplotlib.collections.LineCollection)]
    assert [sorted(s[:, 1]) for c in bars for s in c.get_segments()] == [pytest.approx([0.7, 0.8]),
                                                                         pytest.approx([0.9, 0.96])]
    assert [t.get_text() for t in axes.get_xticklabels()] == ["plain\n(2 seeds)", "DropIn\n(2 seeds)"]
    assert [t.get_text() for t in axes.texts] == ["0.75", "0.93"]
    assert axes.get_ylabel() == "final test accuracy"


# markdown_summary

def test_markdown_summary_by_hand(runs):
    # plain: final 0.7, 0.8; best the same; speeds 100 and 50 iter/s; DropIn: best 0.96, 0.9
    assert markdown_summary(runs) == (
        "| configuration | seeds | final accuracy: mean [min, max] | best accuracy: mean [min, max] "
        "| best - final | last iteration | iterations/s |\n"
        "|---|---:|---|---|---|---:|---:|\n"
        "| plain | 2 | 0.7500 [0.7000, 0.8000] | 0.7500 [0.7000, 0.8000] | 0.0000 [0.0000, 0.0000] | 20 | 75 |\n"
        "| DropIn | 2 (1 unfinished) | 0.9300 [0.9000, 0.9600] | 0.9300 [0.9000, 0.9600] | 0.0000 [0.0000, 0.0000] "
        "| 20 | 100 |\n")


def test_markdown_summary_best_of_a_loss_is_its_minimum_and_missing_values_are_dashes():
    log = parse_log(caffe_log({0: 0.1, 10: 0.2}, {0: 2.0, 10: 1.0}, test_loss={0: 3.0, 10: 1.5}))
    no_test = parse_log("Iteration 0, loss = 1\nIteration 10, loss = 0.5\n")
    table = markdown_summary({"a|b": [log], "c": [no_test]}, output="loss").splitlines()
    assert table[0].startswith("| configuration | seeds | final loss: mean [min, max] | best loss:")
    assert table[2] == ("| a\\|b | 1 | 1.5000 [1.5000, 1.5000] | 1.5000 [1.5000, 1.5000] | 0.0000 [0.0000, 0.0000] "
                        "| 10 | 100 |")
    assert table[3] == "| c | 1 (1 unfinished) | — | — | — | 10 | — |"


def test_markdown_summary_reports_how_far_each_run_ended_below_its_best():
    """The late degradation of issue 14: best - final per seed (for a loss, final - best)."""
    falls = parse_log(caffe_log({0: 0.5, 10: 0.9, 20: 0.8}, {0: 2.0, 10: 1.0, 20: 0.5},
                                test_loss={0: 3.0, 10: 1.0, 20: 1.25}))
    holds = parse_log(caffe_log({0: 0.5, 10: 0.9, 20: 0.9}, {0: 2.0, 10: 1.0, 20: 0.5}))
    accuracy = markdown_summary({"x": [falls, holds]}).splitlines()[2]
    assert accuracy.split(" | ")[2:5] == ["0.8500 [0.8000, 0.9000]", "0.9000 [0.9000, 0.9000]",
                                          "0.0500 [0.0000, 0.1000]"]
    loss = markdown_summary({"x": [falls]}, output="loss").splitlines()[2]
    assert loss.split(" | ")[4] == "0.2500 [0.2500, 0.2500]"


# files

@pytest.mark.parametrize("extension, magic", [(".png", b"\x89PNG\r\n"), (".svg", b"<?xml")])
def test_save_figure_png_and_svg(tmp_path, runs, extension, magic):
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(7, 10))
    plot_accuracy(top, runs)
    plot_loss(middle, runs)
    plot_final_bars(bottom, runs)
    path = str(tmp_path / ("runs" + extension))
    save_figure(figure, path)
    plt.close(figure)
    assert os.listdir(str(tmp_path)) == ["runs" + extension]
    with open(path, "rb") as stream:
        data = stream.read()
    assert data.startswith(magic) and len(data) > 10000


def test_plot_schedule_still_draws(axes):
    plot_schedule(axes, 100, starts=(0, 50))
    assert len(axes.lines) == 2 and max(axes.lines[1].get_ydata()) == 1.0


# tools/plot_log.py

def plot_log(*argv):
    """(exit code, stdout, stderr) of plot_log_main; SVG text stays text so labels can be read."""
    out, err = io.StringIO(), io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none"}):
        code = plot_log_main(list(argv), out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def log_files(tmp_path):
    """Two logs named caffe.log in different directories, one log without a test phase."""
    paths = {}
    for name, text in (("a", caffe_log({0: 0.1, 10: 0.5}, {0: 2, 10: 1}, P)),
                       ("b", caffe_log({0: 0.2, 10: 0.4}, {0: 2, 10: 1.5}))):
        os.makedirs(str(tmp_path / name))
        paths[name] = str(tmp_path / name / "caffe.log")
        with open(paths[name], "w") as out:
            out.write(text)
    paths["no_test"] = str(tmp_path / "no_test.log")
    with open(paths["no_test"], "w") as out:
        out.write(caffe_log(loss={0: 3.0, 5: 2.0, 10: 1.0}))
    return paths


def test_cli_plots_each_log_labelled_by_file_and_writes_csv(tmp_path, log_files):
    svg, table = str(tmp_path / "plot.svg"), str(tmp_path / "table.csv")
    code, out, err = plot_log(log_files["a"], log_files["b"], "-o", svg, "--csv", table)
    assert (code, err) == (0, "") and out == "%s\n%s\n" % (svg, table)
    with open(svg) as stream:
        drawn = stream.read()
    for text in ("a/caffe.log", "b/caffe.log", "test accuracy", "DropIn p(t), right axis"):
        assert text in drawn
    assert "logs without a test phase" not in drawn
    with open(table) as stream:
        assert stream.read().splitlines() == [
            "run,configuration,seed,iteration,train_loss,test0/accuracy,p/dropin1_p",
            "a/caffe.log,a/caffe.log,,0,2.0,0.1,0.0", "a/caffe.log,a/caffe.log,,10,1.0,0.5,0.5",
            "b/caffe.log,b/caffe.log,,0,2.0,0.2,", "b/caffe.log,b/caffe.log,,10,1.5,0.4,"]


def test_cli_log_without_test_phase_gets_a_train_loss_panel(tmp_path, log_files):
    svg = str(tmp_path / "plot.svg")
    code, _, _ = plot_log(log_files["no_test"], log_files["a"], "-o", svg)
    assert code == 0
    with open(svg) as stream:
        drawn = stream.read()
    for text in ("logs without a test phase", "no_test.log", "train loss (solver's smoothed loss)",
                 "caffe.log", "test accuracy"):
        assert text in drawn


@pytest.mark.caffe
def test_cli_real_caffe_log_to_png_and_force(tmp_path):
    net = str(tmp_path / "net.prototxt")
    dropin = python_layer("d1", "DropIn", ["prev", "new"], ["joined", "d1_p"], '{"name": "d1", "length": 8}')
    with open(net, "w") as out:
        out.write('layer { name: "data" type: "DummyData" top: "data" top: "label" dummy_data_param {\n'
                  '  shape { dim: 4 dim: 3 } shape { dim: 4 } data_filler { type: "gaussian" std: 1 }\n'
                  '  data_filler { type: "constant" value: 1 } } }\n'
                  'layer { name: "prev" type: "InnerProduct" bottom: "data" top: "prev"\n'
                  '  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }\n'
                  'layer { name: "new" type: "InnerProduct" bottom: "prev" top: "new"\n'
                  '  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }\n'
                  + dropin.replace("  python_param", "  loss_weight: 0 loss_weight: 0\n  python_param", 1) +
                  'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "joined" bottom: "label" top: "loss" }\n'
                  'layer { name: "accuracy" type: "Accuracy" bottom: "joined" bottom: "label" top: "accuracy"\n'
                  '  include { phase: TEST } }\n')
    solver = str(tmp_path / "solver.prototxt")
    with open(solver, "w") as out:
        out.write('net: "%s"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 10\ntest_iter: 1\ntest_interval: 5\n'
                  'display: 1\nsnapshot_after_train: false\nsolver_mode: CPU\n' % net)
    log = str(tmp_path / "train.log")
    with open(log, "w") as stream:
        run = subprocess.run(["caffe", "train", "--solver=" + solver], stderr=stream, stdout=subprocess.DEVNULL,
                             env=dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1"), timeout=120)
    assert run.returncode == 0
    png = str(tmp_path / "plot.png")
    assert plot_log(log, "-o", png)[0] == 0
    with open(png, "rb") as stream:
        first = stream.read()
    assert first.startswith(b"\x89PNG") and len(first) > 10000
    code, _, err = plot_log(log, "-o", png)
    assert code == 2 and err == "plot_log.py: -o %s exists; pass --force to overwrite it\n" % png
    assert plot_log(log, "-o", png, "--force")[0] == 0
    assert sorted(os.listdir(str(tmp_path))) == ["net.prototxt", "plot.png", "solver.prototxt", "train.log"]


@pytest.mark.parametrize("case", ["missing", "directory", "not_a_log", "extension", "csv_exists", "no_output",
                                  "same_file", "twice", "no_directory"])
def test_cli_errors_one_line_exit_2_nothing_written(tmp_path, log_files, case):
    good = log_files["a"]
    notes = tmp_path / "notes.txt"
    notes.write_text("no solver here\n")
    existing = tmp_path / "old.csv"
    existing.write_text("keep me\n")
    before = sorted(os.listdir(str(tmp_path)))
    png = str(tmp_path / "plot.png")
    argv, message = {
        "missing": ([str(tmp_path / "gone.log"), "-o", png], "log %s does not exist" % (tmp_path / "gone.log")),
        "directory": ([str(tmp_path / "a"), "-o", png], "log %s cannot be read (Is a directory)" % (tmp_path / "a")),
        "not_a_log": ([good, str(notes), "-o", png], "%s is not a Caffe training log" % notes),
        "extension": ([good, "-o", str(tmp_path / "plot.jpg")], "-o must end in .png or .svg, got %s"
                      % (tmp_path / "plot.jpg")),
        "csv_exists": ([good, "-o", png, "--csv", str(existing)], "--csv %s exists; pass --force" % existing),
        "no_output": ([good], "the following arguments are required: -o/--output (see --help)"),
        "same_file": ([good, "-o", png, "--csv", png, "--force"], "--csv and -o are both %s" % png),
        "twice": ([good, log_files["b"], good, "-o", png], "log %s is given more than once" % good),
        "no_directory": ([good, "-o", str(tmp_path / "out" / "plot.png")],
                         "the directory %s does not exist" % (tmp_path / "out")),
    }[case]
    code, out, err = plot_log(*argv)
    assert (code, out) == (2, "")
    assert err.startswith("plot_log.py: ") and err.endswith("\n") and err.count("\n") == 1
    assert message in err
    assert sorted(os.listdir(str(tmp_path))) == before
    assert existing.read_text() == "keep me\n"


def test_cli_unwritable_output_one_line_exit_2(log_files):
    # /proc exists but takes no new files (even for root)
    code, out, err = plot_log(log_files["a"], "-o", "/proc/plot.png")
    assert (code, out) == (2, "")
    assert err.startswith("plot_log.py: cannot write /proc/plot.png: ") and err.count("\n") == 1
    assert not [name for name in os.listdir("/proc") if name.startswith("plot")]


def test_tools_plot_log_entry_point(tmp_path):
    run = subprocess.run([sys.executable, os.path.join(REPO, "tools", "plot_log.py"), str(tmp_path / "x.log"),
                          "-o", str(tmp_path / "x.png")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    missing = tmp_path / "x.log"
    assert run.stderr == "plot_log.py: log %s does not exist; give the path of a caffe train log\n" % missing
    assert os.listdir(str(tmp_path)) == []


def test_legends_are_under_the_axes_clear_of_the_curves_and_the_axis_label(runs):
    """Issue 22.13: inside the axes, a legend covered curves (every corner has some)."""
    figure, axes = plt.subplots(1, 3, figsize=(12, 4))
    twin = plot_accuracy(axes[0], runs)
    plot_loss(axes[1], runs)
    plot_schedule(axes[2], 100, starts=(0, 50, 100))
    figure.tight_layout()
    figure.canvas.draw()
    for ax, holder in ((axes[0], twin), (axes[1], axes[1]), (axes[2], axes[2])):
        legend = holder.get_legend().get_window_extent()
        assert legend.y1 <= ax.xaxis.label.get_window_extent().y0 <= ax.get_window_extent().y0
        assert legend.y0 >= 0  # and still in the figure
    plt.close(figure)
