"""The experiment runner end to end on a short real experiment: caffe train, logs, CSV, plots."""
import csv
import io
import json
import os
import threading

import pytest

from conftest import REPO
from dropin_caffe import expand_net
from dropin_caffe.cli import export_net, run_experiments
from dropin_caffe.errors import ConfigError
from dropin_caffe.experiments import config, runner, training

SHORT = {"name": "short", "dataset": "mnist", "train_count": 200, "test_count": 100,
         "iterations": 30, "test_interval": 10, "seeds": [1, 2],
         "configurations": {"LeNet": ["--template", "lenet", "--set", "train_batch_size=16"],
                            "LeNet-deep DropIn": ["--preset", "lenet-deep", "--depth", "2", "--dropin-length", "20",
                                                  "--p-top", "--set", "train_batch_size=16"]}}


@pytest.fixture
def short(tmp_path):
    path = tmp_path / "short.json"
    path.write_text(json.dumps(SHORT))
    return str(path)


def finished_record(run_dir):
    """What a run's record.json says of its end (None while unfinished)."""
    with open(os.path.join(run_dir, "record.json")) as f:
        return json.load(f)["finished"]


def run(argv, capsys):
    code = run_experiments.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.caffe
def test_a_short_experiment_trains_parses_and_plots(tmp_path, short, capsys):
    out_dir, data_dir = str(tmp_path / "out"), str(tmp_path / "data")
    code, out, err = run([short, "-o", out_dir, "--data-dir", data_dir], capsys)
    assert code == 0, err
    for name in ("results.csv", "summary.md", "short.png", "short.svg"):
        assert os.path.getsize(os.path.join(out_dir, name)) > 0
    for configuration in SHORT["configurations"]:
        for seed in (1, 2):
            run_dir = os.path.join(out_dir, config.slug(configuration), "seed%d" % seed)
            assert finished_record(run_dir)["iterations"] == 30
            assert os.path.exists(os.path.join(run_dir, "snapshot_iter_30.caffemodel"))  # the final weights, kept
            assert not [name for name in os.listdir(run_dir) if name.endswith(".solverstate")]
            assert "Optimization Done." in open(os.path.join(run_dir, "caffe.log")).read()
    with open(os.path.join(out_dir, "results.csv")) as f:
        rows = list(csv.DictReader(f))
    deep = [row for row in rows if row["configuration"] == "LeNet-deep DropIn" and row["seed"] == "1"]
    assert {"iteration", "train_loss", "test0/accuracy", "p/conv2_1_dropin_p", "p/conv2_2_dropin_p"} <= set(rows[0])
    by_iteration = {int(row["iteration"]): row for row in deep}
    assert float(by_iteration[10]["p/conv2_1_dropin_p"]) == pytest.approx(0.5)  # 10 of L = 20 iterations
    assert float(by_iteration[30]["p/conv2_2_dropin_p"]) == pytest.approx(1.0)
    assert 0 <= float(by_iteration[30]["test0/accuracy"]) <= 1
    assert "| LeNet | 2 |" in out and "| LeNet-deep DropIn | 2 |" in out
    assert "plot: %s" % os.path.join(out_dir, "short.png") in out
    command = next(line.split("tools/export_net.py ")[1] for line in out.splitlines() if "tools/export_net.py" in line)
    assert export_net.main(command.split()) == 0  # the printed command exports the trained net
    assert os.path.exists(os.path.join(out_dir, config.slug("LeNet-deep DropIn"), "seed1", "export"))

    # Rerunning skips the finished runs and reports again; the seeds' masks were set per seed.
    code, out, err = run([short, "-o", out_dir, "--data-dir", data_dir], capsys)
    assert code == 0 and "4 of 4 runs already finished" in err
    net = open(os.path.join(out_dir, config.slug("LeNet-deep DropIn"), "seed2", "net.prototxt")).read()
    assert '\\"seed\\": 2000' in net and '\\"seed\\": 2001' in net


@pytest.mark.caffe
def test_a_failed_run_is_reported_and_the_others_go_on(tmp_path, capsys):
    broken_net = tmp_path / "broken.prototxt"  # builds in expand_net, then fails in Caffe's net setup
    broken_net.write_text("""
        layer { name: "data" type: "DummyData" top: "data" top: "label"
          dummy_data_param { shape { dim: 4 dim: 3 } shape { dim: 4 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 3 } }
        layer { name: "odd" type: "Python" bottom: "ip" top: "odd"
          python_param { module: "no_such_module_here" layer: "Nothing" } }
        """)
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "x"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 5\nsnapshot_prefix: "x"\n')
    broken = dict(SHORT, seeds=[1], configurations={
        "LeNet": SHORT["configurations"]["LeNet"],
        "broken": [str(broken_net), "--replicate", "ip=1", "--no-dropin", "--solver", str(solver)]})
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(broken))
    out_dir = str(tmp_path / "out")
    code, out, err = run([str(path), "-o", out_dir, "--data-dir", str(tmp_path / "data"), "--jobs", "1"], capsys)
    assert code == 1
    assert "run %s failed" % os.path.join(out_dir, "broken", "seed1") in err
    assert "no_such_module_here" in err  # the end of its log says why
    assert "1 runs failed" in err
    assert finished_record(os.path.join(out_dir, "LeNet", "seed1"))
    assert not finished_record(os.path.join(out_dir, "broken", "seed1"))
    assert "| LeNet | 1 |" in out


CHAIN = '{"name": "x", "dataset": "mnist", "iterations": 5, "test_interval": 5, "seeds": [1], "configurations": %s}'


@pytest.mark.parametrize("content,message", [
    ("[1, 2]", "an experiment is a JSON object"),
    ('{"name": "x"}', "missing keys"),
    ('{"name": "x", "dataset": "mnist", "iterations": 5, "test_interval": 5, "seeds": [1], "configurations": {}, '
     '"colour": 1}', "unknown keys ['colour']"),
    ('{"name": "x", "dataset": "mnist", "iterations": 0, "test_interval": 5, "seeds": [1], '
     '"configurations": {"a": ["--template", "lenet"]}}', '"iterations" must be an integer >= 1'),
    ('{"name": "x", "dataset": "mnist", "iterations": 5, "test_interval": 5, "seeds": [1], '
     '"configurations": {"a": "--template lenet"}}', '"configurations" maps names to lists'),
    ("{not json", "not a readable JSON experiment"),
    ('{"name": "x", "dataset": "mnist", "iterations": true, "test_interval": 5, "seeds": [1], '
     '"configurations": {"a": ["--template", "lenet"]}}', '"iterations" must be an integer >= 1, got true'),
    ('{"name": "x", "dataset": "mnist", "iterations": 5, "test_interval": 5, "seeds": [true], '
     '"configurations": {"a": ["--template", "lenet"]}}', '"seeds" must be a non-empty list of integers, got [true]'),
    ('{"name": "x", "dataset": "mnist", "iterations": 5, "test_interval": 5, "seeds": [1], "train_count": "9", '
     '"configurations": {"a": ["--template", "lenet"]}}', '"train_count" must be an integer >= 1, got "9"'),
    ('{"name": 7, "dataset": "mnist", "iterations": 5, "test_interval": 5, "seeds": [1], '
     '"configurations": {"a": ["--template", "lenet"]}}', '"name" must be a string, got 7'),
    ('{"name": ' + "[" * 100000 + "]" * 100000 + "}", "not a JSON experiment: it nests too deeply"),
    (CHAIN % '{"a": {"arguments": ["--template", "lenet"], "after": "b"}, "c": []}',
     'configuration "a": "after" must name another configuration of the experiment, one of "c"; got "b"'),
    (CHAIN % '{"a": {"arguments": ["--template", "lenet"], "after": "b"}, "b": {"arguments": [], "after": "a"}}',
     'configurations "a" -> "b" -> "a" start from each other in a cycle'),
    (CHAIN % '{"a": {"arguments": ["--template", "lenet"], "iterations": 0}}',
     'configuration "a": "iterations" must be an integer >= 1, got 0'),
    (CHAIN % '{"a": {"args": ["--template", "lenet"]}}',
     'configuration "a": an object configuration has "arguments"'),
], ids=["list", "missing", "unknown", "iterations 0", "configurations", "not json", "iterations true",
        "seeds true", "train_count string", "name number", "deep", "after unknown", "cycle", "stage iterations",
        "no arguments"])
def test_bad_experiment_files(tmp_path, capsys, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        config.load(str(path))
    code, out, err = run([str(path), "-o", str(tmp_path / "out")], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err
    assert not os.path.exists(tmp_path / "out")


QUICK = ["--template", "cifar10_quick", "--set", "train_batch_size=16"]


@pytest.mark.caffe
def test_a_chained_run_starts_from_the_final_weights_of_the_one_before(tmp_path, capsys):
    """cifar10_quick trained 10 iterations, then the same net with 2 identity replicas after conv2
    (function-preserving: conv2 is followed by relu2) started from its final weights: the deep run's
    test at its iteration 0 equals the shallow run's last test, and its x axis goes on from 10."""
    chained = dict(SHORT, name="chained", seeds=[1], iterations=10, test_interval=5, configurations={
        "deep": {"arguments": QUICK + ["--replicate", "conv2=2", "--no-dropin", "--replica-init", "identity"],
                 "after": "quick", "iterations": 5},
        "quick": QUICK})
    path = tmp_path / "chained.json"
    path.write_text(json.dumps(chained))
    experiment = config.load(str(path))
    assert experiment.ordered() == ["quick", "deep"] and experiment.stage("deep").offset == 10
    out_dir = str(tmp_path / "out")
    code, out, err = run([str(path), "-o", out_dir, "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 0, err
    shallow_dir, deep_dir = (os.path.join(out_dir, name, "seed1") for name in ("quick", "deep"))
    log = open(os.path.join(deep_dir, "caffe.log")).read()
    assert "Finetuning from %s" % os.path.join(shallow_dir, "snapshot_iter_10.caffemodel") in log
    assert "Finetuning from %s" % os.path.join(deep_dir, "init.caffemodel") in log
    assert finished_record(deep_dir)["weights"] == "snapshot_iter_5.caffemodel"
    with open(os.path.join(out_dir, "results.csv")) as f:
        rows = {(row["configuration"], int(row["iteration"])): row for row in csv.DictReader(f)}
    deep = sorted(i for c, i in rows if c == "deep")
    assert (deep[0], deep[-1]) == (10, 15)  # counted after the shallow run's 10
    assert float(rows["quick", 0]["test0/loss"]) != float(rows["quick", 10]["test0/loss"])  # it did learn
    for column in ("test0/accuracy", "test0/loss"):
        assert float(rows["deep", 10][column]) == pytest.approx(float(rows["quick", 10][column]), rel=1e-5)


@pytest.mark.parametrize("arguments, message", [
    (["--template", "lenett"], 'configuration "bad": unknown template "lenett"'),
    (["--template", "lenet", "--replicate", "conv2=0"], 'configuration "bad": --replicate conv2=0: K'),
    (["--template", "lenet", "--bogus"], 'configuration "bad": unrecognized arguments: --bogus'),
    (["--template", "lenet", "--set", "train_batch_size=0"], 'configuration "bad": '),
], ids=["unknown template", "K=0", "unknown option", "bad template value"])
def test_a_bad_configuration_is_one_line_before_any_data_is_made(tmp_path, capsys, arguments, message):
    """Every configuration is built (without Caffe) first: a bad one stops the experiment before the
    datasets are made or any run trains, with one line naming it."""
    experiment = dict(SHORT, configurations={"LeNet": SHORT["configurations"]["LeNet"], "bad": arguments})
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(experiment))
    out_dir, data_dir = tmp_path / "out", tmp_path / "data"
    code, out, err = run([str(path), "-o", str(out_dir), "--data-dir", str(data_dir)], capsys)
    assert code == 2 and out == "", err
    assert len(err.strip().splitlines()) == 1 and err.startswith("run_experiments.py: " + message), err
    assert not data_dir.exists() and not out_dir.exists()


@pytest.mark.parametrize("fields, message", [
    pytest.param({"solver": {"lr_policyy": "fixed"}},
                 'configuration "LeNet": its solver with the experiment\'s "solver" fields: ',
                 marks=pytest.mark.caffe),  # caffe_pb2 checks the solver
    ({"solver": {"max_iter": 10}}, '"solver" cannot set max_iter: the runner sets it'),
    ({"solver": {"weight_decay": [0]}}, '"solver" maps solver field names to numbers or strings'),
    pytest.param({"solver": {"base_lr": "fast"}},
                 'configuration "LeNet": its solver with the experiment\'s "solver" fields: ',
                 marks=pytest.mark.caffe),
    ({"panels": "LeNet"}, '"panels" must be a non-empty list of configuration-name prefixes, got "LeNet"'),
    ({"panels": ["Le"]}, "panel 'Le' starts no configuration's name; configurations: LeNet, LeNet-deep DropIn"),
], ids=["unknown field", "runner's field", "list value", "string for a float", "panels not a list",
        "panel of no configuration"])
def test_bad_solver_fields_or_panels_are_one_line_before_any_data_is_made(tmp_path, capsys, fields, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(dict(SHORT, **fields)))
    out_dir, data_dir = tmp_path / "out", tmp_path / "data"
    code, out, err = run([str(path), "-o", str(out_dir), "--data-dir", str(data_dir)], capsys)
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1, err
    assert message in err, err
    assert not data_dir.exists() and not out_dir.exists()


def test_the_experiment_solver_fields_reach_every_run(tmp_path):
    """"solver" replaces the emitted solver's own values (LeNet's is "inv" with weight decay 5e-4)."""
    experiment = config.Experiment(**dict(SHORT, solver={"lr_policy": "fixed", "weight_decay": 0, "base_lr": 0.02}))
    data = {"train_lmdb": "/data/train", "test_lmdb": "/data/test", "mean_file": "/data/mean", "shape": (1, 28, 28),
            "test_count": 100}
    for name in experiment.configurations:
        path = runner.build_run(experiment, runner.Run(name, 1, str(tmp_path / config.slug(name))), data,
                                run_experiments.keywords(experiment.stage(name).arguments))
        fields = [line.split(":")[0] for line in open(path).read().splitlines()]
        text = open(path).read()
        assert 'lr_policy: "fixed"' in text and "weight_decay: 0\n" in text and "base_lr: 0.02\n" in text
        assert fields.count("lr_policy") == fields.count("weight_decay") == fields.count("base_lr") == 1


def test_unknown_experiment_names_the_built_in_ones(capsys):
    code, out, err = run(["lenet-depp"], capsys)
    assert code == 2 and "no built-in experiment 'lenet-depp'" in err and "lenet-deep" in err


@pytest.mark.caffe
def test_built_in_experiments_build_their_nets(tmp_path):
    """Every configuration of every built-in experiment turns into a net and solver expand_net accepts."""
    data = {"train_lmdb": "/data/train", "test_lmdb": "/data/test", "mean_file": "/data/mean", "shape": (1, 28, 28),
            "test_count": 1000}
    for name, experiment in config.BUILTIN.items():
        config.check_chains(experiment, name)
        for configuration in experiment.configurations:
            stage = experiment.stage(configuration)
            run_dir = str(tmp_path / config.slug(name) / config.slug(configuration))
            solver = runner.build_run(experiment, runner.Run(configuration, 1, run_dir), data,
                                      run_experiments.keywords(stage.arguments))
            text = open(solver).read()
            assert "max_iter: %d" % stage.iterations in text and "test_iter: 10" in text
            assert "/data/train" in open(os.path.join(run_dir, "net.prototxt")).read()


@pytest.mark.caffe
def test_a_configuration_with_native_layers_trains_under_caffe_with_them_preloaded(tmp_path, capsys):
    native = dict(SHORT, name="native", seeds=[1], configurations={
        "native DropIn": SHORT["configurations"]["LeNet-deep DropIn"] + ["--native"]})
    path = tmp_path / "native.json"
    path.write_text(json.dumps(native))
    out_dir = str(tmp_path / "out")
    code, out, err = run([str(path), "-o", out_dir, "--data-dir", str(tmp_path / "data")], capsys)
    assert code == 0, err
    run_dir = os.path.join(out_dir, config.slug("native DropIn"), "seed1")
    assert 'type: "DropIn"' in open(os.path.join(run_dir, "net.prototxt")).read()
    with open(os.path.join(out_dir, "results.csv")) as f:
        rows = {int(row["iteration"]): row for row in csv.DictReader(f)}
    assert float(rows[10]["p/conv2_1_dropin_p"]) == pytest.approx(0.5)


# A `caffe train` log stopped by Ctrl-C at iteration 96 of 200: Caffe still says "Optimization
# Done." and exits 0 (lines as Caffe 1.0 prints them, trimmed).
STOPPED_LOG = """\
I1201 10:00:00.000000  1 solver.cpp:218] Iteration 96 (12.5 iter/s, 0.8s/10 iters), loss = 0.31
I1201 10:00:00.000000  1 solver.cpp:237]     Train net output #0: loss = 0.31 (* 1 = 0.31 loss)
I1201 10:00:00.100000  1 solver.cpp:464] Snapshotting to binary proto file snapshot_iter_96.caffemodel
I1201 10:00:00.100000  1 solver.cpp:300] Optimization stopped early.
I1201 10:00:00.100000  1 caffe.cpp:260] Optimization Done.
"""


def test_a_log_that_stopped_before_max_iter_is_not_finished():
    assert training.reached_iteration(STOPPED_LOG) == 96
    assert not training.finished(STOPPED_LOG, 0, 200)
    without_the_early_line = STOPPED_LOG.replace("Optimization stopped early.", "")
    assert not training.finished(without_the_early_line, 0, 200)  # the iteration alone decides
    done = STOPPED_LOG.replace("Optimization stopped early.", "Iteration 200, loss = 0.2")
    assert training.finished(done, 0, 200) and not training.finished(done, 1, 200)


@pytest.mark.caffe
def test_caffe_stopped_by_ctrl_c_is_not_marked_done(tmp_path):
    """The real `caffe train` on a tiny net with a large max_iter, stopped through the runner's stop
    (what Ctrl-C does): Caffe exits 0 saying "Optimization Done.", the run is not done."""
    net = tmp_path / "net.prototxt"
    net.write_text("""
        layer { name: "data" type: "DummyData" top: "data" top: "label"
          dummy_data_param { shape { dim: 2 dim: 3 } shape { dim: 2 }
            data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 0 } } }
        layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
          inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
        layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
        """)
    run_dir = tmp_path / "run"
    solver = tmp_path / "solver.prototxt"
    solver.write_text('net: "%s"\nbase_lr: 0.01\nlr_policy: "fixed"\nmax_iter: 100000000\ndisplay: 1000\n'
                      'snapshot_prefix: "%s"\nsolver_mode: CPU\n' % (net, run_dir / "snapshot"))
    stopped = training.Run("tiny", 1, str(run_dir), {"tiny": 1})
    task = training.Task(stopped, str(solver), 100000000, threads=1, tag="ctrl-c test")

    class Watch(training.Events):
        def update(self, label, iteration):  # Caffe is training: press Ctrl-C
            if iteration >= 1000:
                training.stop(task.tag)

    timer = threading.Timer(60, training.stop, [task.tag])  # never hang the suite
    timer.start()
    try:
        ok, _ = training.execute(task, Watch())
    finally:
        timer.cancel()
    log = open(stopped.log).read()
    assert "Optimization Done." in log and 1000 <= training.reached_iteration(log) < 100000000
    assert not ok and not stopped.finished and finished_record(str(run_dir)) is None


def test_ctrl_c_is_one_line_exit_130(tmp_path, short, capsys, monkeypatch):
    """Ctrl-C while the runs train (here raised by the runner itself): one line, no traceback."""
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "run_experiment", interrupted)
    code, out, err = run([short, "-o", str(tmp_path / "out"), "--data-dir", str(tmp_path / "data")], capsys)
    lines = err.strip().splitlines()
    assert code == 130 and out == ""
    assert lines == ["run_experiments.py: stopped; 0 of 4 runs finished; run the same command to continue (the others "
                     "resume from their snapshots)"], err


def test_deep_experiment_schedules_end_where_its_description_says():
    """`deep` (issue 15): 100 added 16-channel layers; the together run's DropIns are in at L, the two
    staggered ones' last at about 1194, before the 1500 iterations end; plain has no DropIn."""
    from dropin_caffe.netgen import rewrite
    from dropin_caffe.netgen.expand import expand_net

    experiment = config.load("deep")
    ends = {}
    for configuration, arguments in experiment.configurations.items():
        keywords = dict(run_experiments.keywords(arguments), validate=False)
        expansion = expand_net(**keywords)
        assert expansion.expanded.weight_layers == 104 and expansion.shapes["TRAIN"]["pool2"][1] == 16
        configs = [c for _, c in rewrite.dropin_configs(expansion.net)]
        ends[configuration] = max((c.get("start", 0) + c["length"] for c in configs), default=None)
    assert list(ends.values()) == [None, 600, 1194, 594 + round(300 * 1.007 ** 99)]
    assert 1180 <= ends["depth 100, DropIn staggered S=6 L=300*1.007^i"] <= 1200 < experiment.iterations


def test_deep_depths_lets_every_layer_train_in_place_for_a_third_of_the_run():
    """`deep-depths` (issue 25): each depth of 30, 50, 100 has the six methods; in a DropIn run the
    last layer is in by 2/3 of the iterations and each layer is in before the next one starts."""
    from dropin_caffe.netgen import rewrite
    from dropin_caffe.netgen.expand import expand_net

    experiment = config.load("deep-depths")
    assert len(experiment.seeds) >= 2 and experiment.solver == {"base_lr": 0.003}
    for depth in (30, 50, 100):
        panel = experiment.panel("depth %d" % depth)
        assert list(panel) == list(config.DEEP_METHODS)
        for method, name in panel.items():
            expansion = expand_net(**dict(run_experiments.keywords(experiment.configurations[name]), validate=False))
            assert expansion.expanded.weight_layers == depth + 4
            configs = sorted((c.get("start", 0), c["length"]) for _, c in rewrite.dropin_configs(expansion.net))
            if method.startswith("plain"):
                assert configs == []
                continue
            assert len(configs) == depth and configs[-1][0] + configs[-1][1] <= experiment.iterations * 2 / 3
            assert all(start + length <= following for (start, length), (following, _) in zip(configs, configs[1:]))


def test_panels_draw_one_column_per_prefix_with_one_colour_per_method(tmp_path):
    """A panel holds the configurations its prefix starts (whole words: "depth 1" is not "depth 10"),
    named without it; a method keeps its colour from panel to panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dropin_caffe.experiments import logs, report

    names = ["depth 1, plain", "depth 1, DropIn", "depth 10, DropIn", "depth 10, plain"]
    experiment = config.Experiment("p", "mnist", 30, 30, [1], dict.fromkeys(names, []), panels=["depth 1", "depth 10"])
    assert experiment.panel("depth 1") == {"plain": "depth 1, plain", "DropIn": "depth 1, DropIn"}
    grouped = {name: [logs.parse_log(FINISHED_LOG)] for name in names}
    figure = report._panels(plt, experiment, grouped)
    top = [ax for ax in figure.axes if ax.get_title()]
    assert [ax.get_title() for ax in top] == ["depth 1", "depth 10"]
    colours = [{line.get_label(): line.get_color() for line in ax.lines} for ax in top]
    assert colours[0] == colours[1] and len(set(colours[0].values())) == 2
    plt.close(figure)


FINISHED_LOG = """\
I1201 10:00:00.000000  1 solver.cpp:330] Iteration 0, Testing net (#0)
I1201 10:00:00.000000  1 solver.cpp:397]     Test net output #0: accuracy = 0.1
I1201 10:00:00.000000  1 solver.cpp:218] Iteration 0 (0 iter/s, 0s/10 iters), loss = 2.3
I1201 10:00:01.000000  1 solver.cpp:330] Iteration 30, Testing net (#0)
I1201 10:00:01.000000  1 solver.cpp:397]     Test net output #0: accuracy = 0.5
I1201 10:00:01.000000  1 solver.cpp:218] Iteration 30 (30 iter/s, 1s/30 iters), loss = 1.2
I1201 10:00:01.100000  1 caffe.cpp:260] Optimization Done.
"""


def test_report_only_names_what_it_leaves_out_and_prints_commands_that_run_anywhere(tmp_path, short, capsys,
                                                                                     monkeypatch):
    """Issue 22.10 and 22.3: one seed of one configuration has finished (here: has a log, whatever
    the runner's own bookkeeping); the report says which runs are missing, and its export_net
    command works from any folder (absolute paths)."""
    monkeypatch.setattr(runner.Run, "finished", property(lambda run: os.path.exists(run.log)))
    out_dir = tmp_path / "out"
    run_dir = out_dir / config.slug("LeNet-deep DropIn") / "seed1"
    run_dir.mkdir(parents=True)
    (run_dir / "caffe.log").write_text(FINISHED_LOG)
    expand_net(preset="lenet-deep", depth=1, dropin_length=20, validate=False).write(str(run_dir))
    os.rename(str(run_dir / "lenet_deep_dropin.prototxt"), str(run_dir / "net.prototxt"))
    code, out, err = run([short, "-o", str(out_dir), "--report-only"], capsys)
    assert code == 0, err
    assert err == ("not finished, so left out of the report: LeNet (seeds 1, 2); LeNet-deep DropIn (seed 2); run "
                   "without --report-only to train them\n")
    assert "| LeNet-deep DropIn | 1 |" in out and "| LeNet |" not in out
    assert "\n  %s run python3 %s " % (os.path.join(REPO, "tools", "caffe-env"),
                                       os.path.join(REPO, "tools", "export_net.py")) in out


def test_progress_into_a_log_file_is_a_plain_line_per_finished_run():
    """Issue 22.13: no bar, no carriage returns when the stream is not a terminal."""
    stream = io.StringIO()
    progress = run_experiments.Progress(stream)
    progress.start(200)
    progress.update("LeNet seed 1", 50)
    progress.finish("LeNet seed 1", 100, "done, accuracy 0.98")
    progress.update("LeNet seed 2", 40)
    progress.say("Ctrl-C again to stop")
    assert stream.getvalue() == "LeNet seed 1: done, accuracy 0.98\nCtrl-C again to stop\n"
