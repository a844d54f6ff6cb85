"""Experiments: configurations x seeds, each trained with the real `caffe train`, then parsed and plotted.

A configuration is a name and the arguments expand_net takes (a template, preset or net file and its
rewrite options), so any net the command line can build can be an experiment, the user's included.
An experiment adds the dataset, the iterations, the test interval and the seeds. Built-in ones
follow Smith, Hand & Doster (2015); a user's own is a JSON file of the same fields::

    {"name": "mine", "dataset": "mnist", "train_count": 4000, "test_count": 1000,
     "iterations": 2000, "test_interval": 200, "seeds": [1, 2],
     "configurations": {"plain": ["--preset", "lenet-deep", "--no-dropin"],
                        "DropIn": ["--preset", "lenet-deep", "--dropin-length", "500"]}}

Each run lives in OUT/<configuration>/seed<N>/ (net, solver, caffe.log, done.json). A run with
done.json is finished and skipped when the experiment is run again; Ctrl-C stops the current run
and leaves the finished ones intact; a failed run is reported with its log's last lines and the
others go on.
"""
import concurrent.futures
import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
import typing

from . import cli, expand, prototxt, rewrite, templates
from .errors import ConfigError


@dataclasses.dataclass
class Experiment:
    name: str
    dataset: str
    iterations: int
    test_interval: int
    seeds: typing.List[int]
    configurations: typing.Dict[str, typing.List[str]]
    train_count: typing.Optional[int] = None
    test_count: typing.Optional[int] = None
    description: str = ""


LENET_DEEP = ["--preset", "lenet-deep", "--p-top"]
SMALL_BATCH = ["--set", "train_batch_size=32"]

BUILTIN = {
    "lenet-deep": Experiment(
        "lenet-deep", "mnist", 2000, 200, [1, 2, 3], {
            "LeNet": ["--template", "lenet"],
            "LeNet-deep (5 extra conv), plain": LENET_DEEP + ["--no-dropin"],
            "LeNet-deep, DropIn L=500": LENET_DEEP + ["--dropin-length", "500"],
            "LeNet-deep, DropIn L=1000": LENET_DEEP + ["--dropin-length", "1000"],
        }, None, 1000,
        "A LeNet with 5 extra 3x3 conv+ReLU layers (gaussian std 0.01 fillers) does not train plainly; "
        "with its extra layers entering by gradual DropIn it does."),
    "lenet-init": Experiment(
        "lenet-init", "mnist", 2000, 200, [1, 2, 3], {
            "LeNet-deep plain, added layers gaussian 0.01": LENET_DEEP + ["--no-dropin"],
            "LeNet-deep plain, added layers xavier": [
                "--template", "lenet", "--replicate", "conv2=5", "--replica-kernel", "3", "--add-activation", "relu",
                "--no-dropin"],
        }, None, 1000,
        "The same plain deep LeNet with its added layers started from gaussian std 0.01 (the paper's) or "
        "from xavier: the init is part of the claim."),
    "lenet-depth": Experiment(
        "lenet-depth", "mnist", 3000, 250, [1, 2, 3], {
            "depth %d, DropIn L=1000" % n: LENET_DEEP + ["--depth", str(n), "--dropin-length", "1000"]
            for n in (5, 10, 15)}, None, 1000,
        "LeNet-deep with 5, 10 and 15 extra conv layers, each entering by gradual DropIn."),
    "fashion-cifar11": Experiment(
        "fashion-cifar11", "fashion_mnist", 1500, 150, [1, 2, 3], {
            "CIFAR-10 quick (3 conv)": ["--template", "cifar10_quick"] + SMALL_BATCH,
            "cifar10-11 (9 conv + 2 fc), plain": ["--preset", "cifar10-11", "--no-dropin"] + SMALL_BATCH,
            "cifar10-11, DropIn L=500": ["--preset", "cifar10-11", "--dropin-length", "500", "--p-top"] + SMALL_BATCH,
        }, 10000, 2000,
        "The CIFAR-10 quick net and its 11-weight-layer expansion, plain and with DropIn, on Fashion-MNIST "
        "(the proxy we can ship; pass --dataset cifar10 with your CIFAR-10 batches). Batch 32: the expanded "
        "net's 5x5 convs at full resolution cost about 0.5 s an iteration on 2 cores."),
    "regularize": Experiment(
        "regularize", "mnist", 2000, 200, [1, 2, 3], {
            "LeNet": ["--template", "lenet"],
            "LeNet + Dropout 0.5 before ip2": ["--template", "lenet", "--set", "dropout_ratio=0.5"],
            "LeNet + regularizing DropIn p_new 0.5 before ip2": [
                "--template", "lenet", "--set", "dropout_ratio=0.5", "--regularize", "drop1=0.5"],
        }, 4000, 1000,
        "Regularizing DropIn in the place of a Dropout layer, against that Dropout and against neither "
        "(4000 training images, where regularizing can matter)."),
}

FIELDS = {f.name for f in dataclasses.fields(Experiment)}


def load(name_or_path):
    """A built-in experiment by name, or a user's from a JSON file."""
    if name_or_path in BUILTIN:
        return dataclasses.replace(BUILTIN[name_or_path])
    if not os.path.exists(name_or_path):
        raise ConfigError("no built-in experiment %r and no such file; built-in: %s, or a JSON file "
                          "(see `run_experiments.py --help`)" % (name_or_path, ", ".join(BUILTIN)))
    try:
        with open(name_or_path) as f:
            given = json.load(f)
    except (OSError, ValueError) as error:
        raise ConfigError("%s: not a readable JSON experiment (%s)" % (name_or_path, error)) from None
    if not isinstance(given, dict):
        raise ConfigError("%s: an experiment is a JSON object with keys %s" % (name_or_path, ", ".join(sorted(FIELDS))))
    unknown = sorted(set(given) - FIELDS)
    missing = sorted({"name", "dataset", "iterations", "test_interval", "seeds", "configurations"} - set(given))
    if unknown or missing:
        raise ConfigError("%s: %s%s" % (name_or_path, "unknown keys %s; " % unknown if unknown else "",
                                          "missing keys %s" % missing if missing else "known keys: %s" % sorted(FIELDS)))
    experiment = Experiment(**given)
    configurations = experiment.configurations
    if not (isinstance(configurations, dict) and configurations and
            all(isinstance(v, list) and all(isinstance(a, str) for a in v) for v in configurations.values())):
        raise ConfigError('%s: "configurations" maps names to lists of expand_net arguments, such as '
                          '{"plain": ["--preset", "lenet-deep", "--no-dropin"]}' % name_or_path)
    for key in ("iterations", "test_interval"):
        if not isinstance(getattr(experiment, key), int) or getattr(experiment, key) < 1:
            raise ConfigError('%s: "%s" must be an integer >= 1' % (name_or_path, key))
    if not (isinstance(experiment.seeds, list) and experiment.seeds and all(isinstance(s, int) for s in experiment.seeds)):
        raise ConfigError('%s: "seeds" must be a non-empty list of integers' % name_or_path)
    return experiment


def slug(name):
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_")


@dataclasses.dataclass
class Run:
    configuration: str
    seed: int
    directory: str

    @property
    def log(self):
        return os.path.join(self.directory, "caffe.log")

    @property
    def done(self):
        return os.path.join(self.directory, "done.json")

    @property
    def finished(self):
        return os.path.exists(self.done)


def plan_runs(experiment, out_dir):
    # Seed by seed, so that every configuration has a first result early.
    return [Run(name, seed, os.path.join(out_dir, slug(name), "seed%d" % seed))
            for seed in experiment.seeds for name in experiment.configurations]


def build_run(experiment, run, data, arguments):
    """Write the run's net and solver (from expand_net's own code) and return the solver's path."""
    parser = cli.expand_parser()
    args = parser.parse_args(arguments + ["-o", run.directory])
    template = args.template or (expand.PRESETS[args.preset].template if args.preset else None)
    if template:  # point the stock net at the dataset; a net that subtracts a mean gets the dataset's
        defaults = templates.NETS[template].defaults
        variables = ["--set", "train_source=" + data["train_lmdb"], "--set", "test_source=" + data["test_lmdb"],
                     "--set", "image_shape=%s" % json.dumps(list(data["shape"]))]
        if defaults["mean_file"] is not None or defaults["mean_value"] is not None:
            variables += ["--set", "mean_file=" + data["mean_file"]]
        args = parser.parse_args(arguments + variables + ["-o", run.directory])
    built = cli.build(args)
    net = built.expanded
    for index, (layer, config) in enumerate(rewrite.dropin_configs(net)):
        config["seed"] = run.seed * 1000 + index  # reproducible masks per seed
        layer.get("python_param").set("param_str", json.dumps(config))
    os.makedirs(run.directory, exist_ok=True)
    net_path = os.path.join(run.directory, "net.prototxt")
    solver = built.solver.copy()
    test_batch = _test_batch(net)
    for key, value in (("net", net_path), ("max_iter", experiment.iterations),
                       ("test_interval", experiment.test_interval),
                       ("test_iter", max(1, -(-data["test_count"] // test_batch))),
                       ("display", max(1, experiment.test_interval // 4)), ("random_seed", run.seed),
                       ("snapshot", 0), ("snapshot_after_train", False),
                       ("snapshot_prefix", os.path.join(run.directory, "snapshot")),
                       ("solver_mode", prototxt.Enum("CPU"))):
        solver.set(key, value)
    solver_path = os.path.join(run.directory, "solver.prototxt")
    prototxt.write(net_path, net, force=True)
    prototxt.write(solver_path, solver, force=True)
    return solver_path


def _test_batch(net):
    for layer in net.get_all("layer"):
        include = layer.get("include")
        param = layer.get("data_param")
        if param is not None and include is not None and include.get("phase") == "TEST":
            return param.get("batch_size", 1)
    return 100


ITERATION = re.compile(r"Iteration (\d+)")


class Progress:
    """One status line over all runs: percent of all iterations, the runs going on, an ETA."""

    def __init__(self, total_iterations, stream=sys.stderr):
        self.total, self.finished, self.current = total_iterations, 0, {}
        self.stream, self.tty = stream, stream.isatty()
        self.start, self.last_print = time.time(), 0.0
        self.lock = threading.Lock()

    def update(self, label, iteration):
        with self.lock:
            self.current[label] = iteration
            self._show(final=False)

    def finish(self, label, iterations, verdict):
        with self.lock:
            self.current.pop(label, None)
            self.finished += iterations
            self._show(final=True, message="%s: %s" % (label, verdict))

    def _show(self, final, message=None):
        done = self.finished + sum(self.current.values())
        elapsed = time.time() - self.start
        eta = "%dm%02ds" % divmod(int(elapsed / done * (self.total - done)), 60) if done else "?"
        filled = 30 * done // max(1, self.total)
        line = "[%s%s] %3d%%  eta %s  %s" % ("#" * filled, "." * (30 - filled), 100 * done // max(1, self.total), eta,
                                             "; ".join("%s it %d" % item for item in self.current.items()))
        if message:
            self.stream.write(("\r" + " " * 150 + "\r" if self.tty else "") + message + "\n")
        if self.tty:
            self.stream.write("\r" + line[:150].ljust(150))
        elif message or time.time() - self.last_print > 30:
            self.stream.write(line + "\n")
            self.last_print = time.time()
        self.stream.flush()


STOP = threading.Event()  # set on Ctrl-C: every run going on stops Caffe, no new run starts


def train(run, solver_path, progress, iterations, threads=None):
    """`caffe train` one run, its log to run.log. Returns (finished, the log's last lines)."""
    environ = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    if threads:
        environ["OPENBLAS_NUM_THREADS"] = str(threads)
    label = "%s, seed %d" % (run.configuration, run.seed)
    started = time.time()
    with open(run.log + ".partial", "w") as log:
        process = subprocess.Popen(["caffe", "train", "--solver=" + solver_path], stdout=log,
                                   stderr=subprocess.STDOUT, env=environ)
        try:
            iteration = 0
            while process.poll() is None and not STOP.is_set():
                time.sleep(0.5)
                iteration = _last_iteration(run.log + ".partial", iteration)
                progress.update(label, iteration)
        finally:
            if process.poll() is None:  # Ctrl-C or an error here: stop Caffe, keep the finished runs
                process.send_signal(signal.SIGINT)
                process.wait()
    os.replace(run.log + ".partial", run.log)
    with open(run.log, errors="replace") as f:
        text = f.read()
    ok = process.returncode == 0 and "Optimization Done." in text
    if ok:
        with open(run.done, "w") as f:
            json.dump({"seconds": round(time.time() - started, 1), "iterations": iterations}, f)
    progress.finish(label, iterations, "done in %.0f s" % (time.time() - started) if ok else "FAILED")
    return ok, _why(text.splitlines())


REASON = re.compile(r"^[FE]\d{4} |Error|error:|Check failed|dropin_caffe: |terminate called")


def _why(lines):
    """The lines of a failed run's log that say why: from the first error on, else the last ones."""
    first = next((i for i, line in enumerate(lines) if REASON.search(line)), max(0, len(lines) - 12))
    return lines[first:first + 12]


def _last_iteration(path, previous):
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4000))
            found = ITERATION.findall(f.read().decode(errors="replace"))
    except OSError:
        return previous
    return int(found[-1]) if found else previous


def report(experiment, runs, out_dir):
    """Write results.csv, the plots (PNG and SVG) and summary.md; return (summary text, plot path)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import logs, plots
    finished = [(run, logs.read_log(run.log)) for run in runs if run.finished]
    if not finished:
        raise ConfigError("no run of %s has finished; nothing to report" % experiment.name)
    grouped, rows = {}, []  # {configuration: [Log per seed]} in the experiment's order; CSV rows
    for run, log in finished:
        grouped.setdefault(run.configuration, []).append(log)
        rows += logs.rows_for(log, os.path.relpath(run.directory, out_dir), run.configuration, run.seed)
    logs.write_csv(rows, os.path.join(out_dir, "results.csv"))
    figure, axes = plt.subplots(1, 3, figsize=(19, 5.6), gridspec_kw={"width_ratios": [2.2, 1.5, 1.5]})
    plots.plot_accuracy(axes[0], grouped)
    plots.plot_loss(axes[1], grouped)
    plots.plot_final_bars(axes[2], grouped)
    figure.suptitle(textwrap.fill("%s: %s" % (experiment.name, experiment.description), 190), fontsize=10)
    figure.tight_layout()
    picture = os.path.join(out_dir, "%s.png" % experiment.name)
    for path in (picture, os.path.splitext(picture)[0] + ".svg"):
        plots.save_figure(figure, path)
    plt.close(figure)
    summary = plots.markdown_summary(grouped)
    partial = os.path.join(out_dir, "summary.md.partial")
    with open(partial, "w") as f:
        f.write("# %s\n\n%s\n\n%s\n" % (experiment.name, experiment.description, summary))
    os.replace(partial, os.path.join(out_dir, "summary.md"))
    return summary, picture


def run_experiment(experiment, out_dir, data_dir, source=None, jobs=1, stream=sys.stderr):
    """Train every unfinished run of `experiment`; returns (finished, failed) lists of runs."""
    from . import datasets
    subset = "%s_%s_%s" % (experiment.dataset, experiment.train_count or "all", experiment.test_count or "all")
    if source:  # the user's own files get their own folder, beside the embedded data's
        subset += "_" + hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:8]
    data = datasets.prepare(experiment.dataset, os.path.join(data_dir, subset), experiment.train_count,
                            experiment.test_count, source, log=lambda line: print(line, file=stream, flush=True))
    runs = plan_runs(experiment, out_dir)
    todo = [run for run in runs if not run.finished]
    if len(todo) < len(runs):
        print("%d of %d runs already finished in %s; running the other %d"
              % (len(runs) - len(todo), len(runs), out_dir, len(todo)), file=stream)
    progress = Progress(experiment.iterations * len(todo), stream)
    solvers = [build_run(experiment, run, data, experiment.configurations[run.configuration]) for run in todo]
    failed = []

    def one(run, solver):
        if STOP.is_set():
            return
        ok, tail = train(run, solver, progress, experiment.iterations, threads=1 if jobs > 1 else None)
        if not ok and not STOP.is_set():
            failed.append(run)
            with progress.lock:
                print("run %s failed; the end of its log %s:\n  %s" % (run.directory, run.log, "\n  ".join(tail)),
                      file=stream)

    STOP.clear()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            for future in [pool.submit(one, run, solver) for run, solver in zip(todo, solvers)]:
                future.result()
        except KeyboardInterrupt:
            STOP.set()
            raise
    return runs, failed
