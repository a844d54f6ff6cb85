"""Running an experiment (`config.Experiment`): every configuration x seed trained with the real
`caffe train`, two runs at a time by default.

A configuration's expand_net arguments become `expand_net` keywords through the `keywords`
function the caller gives (the command line's own parser), so a run builds exactly the net the
command line would. Each run lives in OUT/<configuration>/seed<N>/ (net, solver, caffe.log, its
final weights snapshot_iter_N.caffemodel, done.json). A configuration chained "after" another
starts from that configuration's final weights of the same seed (`caffe train --weights=`), so
it waits for it; a net with initial weights (`--replica-init identity`) has them written beside
it as init.caffemodel and loaded too. A run whose done.json and final weights are
there is finished and skipped when the experiment is run again; Ctrl-C stops the current run and
leaves the finished ones intact; a failed run is reported with its log's last lines and the
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
import threading
import time

from .. import files, native
from ..errors import ConfigError, clip
from ..netgen import identity, prototxt, rewrite, templates
from ..netgen.expand import expand_net
from ..netgen.plan import PRESETS
from ..netgen.vocabulary import is_native
from .config import slug


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

    def weights(self, iterations):
        """The final .caffemodel a run of `iterations` leaves (Caffe's snapshot after training)."""
        return os.path.join(self.directory, "snapshot_iter_%d.caffemodel" % iterations)

    @property
    def finished(self):
        """done.json is there, and so are the final weights it names."""
        try:
            with open(self.done) as f:
                weights = json.load(f).get("weights")
        except (OSError, ValueError):
            return False
        return bool(weights) and os.path.exists(os.path.join(self.directory, weights))


INIT_WEIGHTS = "init.caffemodel"


def plan_runs(experiment, out_dir):
    # Seed by seed, so that every configuration has a first result early; a chained configuration
    # after the one it starts from.
    return [Run(name, seed, os.path.join(out_dir, slug(name), "seed%d" % seed))
            for seed in experiment.seeds for name in experiment.ordered()]


def start_weights(experiment, run, out_dir):
    """The .caffemodel files `caffe train --weights=` loads for `run`, in order: the final weights
    of the run it is chained after, then its own initial weights (if build_run wrote them)."""
    stage = experiment.stage(run.configuration)
    found = []
    if stage.after is not None:
        before = Run(stage.after, run.seed, os.path.join(out_dir, slug(stage.after), "seed%d" % run.seed))
        found.append(before.weights(experiment.stage(stage.after).iterations))
    init = os.path.join(run.directory, INIT_WEIGHTS)
    return found + ([init] if os.path.exists(init) else [])


def _expand(keywords, data):
    """expand_net (without Caffe) with `keywords`, a stock net pointed at `data`."""
    keywords = dict(keywords)
    template = keywords.get("template") or (PRESETS[keywords["preset"]].template if keywords.get("preset") else None)
    if template in templates.NETS:  # point the stock net at the dataset; one that subtracts a mean gets the dataset's
        settings = dict(keywords.get("settings") or {}, train_source=data["train_lmdb"],
                        test_source=data["test_lmdb"], image_shape=list(data["shape"]))
        defaults = templates.NETS[template].defaults
        if defaults["mean_file"] is not None or defaults["mean_value"] is not None:
            settings["mean_file"] = data["mean_file"]
        keywords["settings"] = settings
    return expand_net(**dict(keywords, validate=False))  # an unknown template is expand_net's ConfigError


# The image shape of each dataset, for checking the configurations before the data is made.
SHAPES = {"mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28), "cifar10": (3, 32, 32)}


def check_configurations(experiment, keywords):
    """Build every configuration's net without Caffe or data (placeholder sources, the dataset's
    image shape), so that a bad configuration is one ConfigError naming it before any data is
    made or any run trains."""
    data = {"train_lmdb": "train_lmdb", "test_lmdb": "test_lmdb", "mean_file": "mean.binaryproto",
            "shape": SHAPES.get(experiment.dataset, (1, 28, 28))}
    for name in experiment.configurations:
        try:
            built = _expand(keywords(experiment.stage(name).arguments), data)
        except ConfigError as error:
            raise ConfigError('configuration "%s": %s' % (clip(name), error)) from None
        if built.solver is None:
            raise ConfigError('configuration "%s": it has no solver to train with; give --solver with a net file, '
                              'or use --template or --preset' % clip(name))
        try:
            prototxt.check_with_caffe_pb2(prototxt.dumps(_solver(experiment, built)), "solver",
                                         filename="the run's solver")
        except ConfigError as error:
            raise ConfigError('configuration "%s": its solver with the experiment\'s "solver" fields: %s'
                              % (clip(name), error)) from None


def _solver(experiment, built):
    """The configuration's emitted solver with the experiment's "solver" fields set."""
    solver = built.solver.copy()
    for key, value in (experiment.solver or {}).items():
        solver.set(key, value)
    return solver


def build_run(experiment, run, data, keywords):
    """Write the run's net and solver (expand_net with `keywords`, pointed at `data`), and its
    INIT_WEIGHTS when the net has initial weights; return the solver's path."""
    built = _expand(keywords, data)
    iterations = experiment.stage(run.configuration).iterations if run.configuration in experiment.configurations \
        else experiment.iterations
    net = built.net
    for index, (layer, config) in enumerate(rewrite.dropin_configs(net)):
        config["seed"] = run.seed * 1000 + index  # reproducible masks per seed
        layer.get("python_param").set("param_str", json.dumps(config))
    os.makedirs(run.directory, exist_ok=True)
    net_path = os.path.join(run.directory, "net.prototxt")
    solver = _solver(experiment, built)
    test_batch = _test_batch(net)
    for key, value in (("net", net_path), ("max_iter", iterations),
                       ("test_interval", min(experiment.test_interval, iterations)),
                       ("test_iter", max(1, -(-data["test_count"] // test_batch))),
                       ("display", max(1, experiment.test_interval // 4)), ("random_seed", run.seed),
                       ("snapshot", 0), ("snapshot_after_train", True),
                       ("snapshot_prefix", os.path.join(run.directory, "snapshot")),
                       ("solver_mode", prototxt.Enum("CPU"))):
        solver.set(key, value)
    solver_path = os.path.join(run.directory, "solver.prototxt")
    prototxt.write(net_path, net, force=True)
    prototxt.write(solver_path, solver, force=True)
    init = os.path.join(run.directory, INIT_WEIGHTS)
    if built.initial_weights is not None:
        files.write_atomic(init, identity.caffemodel(built.initial_weights), force=True)
    elif os.path.exists(init):  # the configuration no longer asks for them
        os.remove(init)
    return solver_path


def _test_batch(net):
    for layer in net.get_all("layer"):
        include = layer.get("include")
        param = layer.get("data_param")
        if param is not None and include is not None and include.get("phase") == "TEST":
            return param.get("batch_size", 1)
    return 100


ITERATION = re.compile(r"Iteration (\d+)")


class Events:
    """What a running experiment reports; the command line draws it as a progress bar."""

    def start(self, total_iterations):
        """Training starts: `total_iterations` over all the runs to do."""

    def update(self, label, iteration):
        """Run `label` is at `iteration`."""

    def finish(self, label, iterations, verdict):
        """Run `label` ended (`verdict`: "done in N s" or "FAILED")."""

    def say(self, text):
        """A message for the user (data preparation, a failed run's log)."""


STOP = threading.Event()  # set on Ctrl-C: every run going on stops Caffe, no new run starts


def train(run, solver_path, events, iterations, threads=None, preload=None, weights=()):
    """`caffe train` one run, its log to run.log. Returns (finished, the log's last lines). A run
    is finished only if Caffe exited 0 and its log reached `iterations` (on SIGINT Caffe stops
    early, yet says "Optimization Done." and exits 0). `preload`: a library for LD_PRELOAD (the
    native layers). `weights`: .caffemodel files to start from (`--weights=A,B`: Caffe copies
    each in order into the layers of the same name)."""
    environ = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    if preload:
        environ["LD_PRELOAD"] = os.pathsep.join(p for p in (preload, environ.get("LD_PRELOAD")) if p)
    if threads:
        environ["OPENBLAS_NUM_THREADS"] = str(threads)
    label = "%s, seed %d" % (run.configuration, run.seed)
    started = time.time()
    with open(run.log + ".partial", "w") as log:
        command = ["caffe", "train", "--solver=" + solver_path] + (["--weights=" + ",".join(weights)] if weights else [])
        process = subprocess.Popen(command, stdout=log,
                                   stderr=subprocess.STDOUT, env=environ)
        try:
            iteration = 0
            while process.poll() is None and not STOP.is_set():
                time.sleep(0.5)
                iteration = _last_iteration(run.log + ".partial", iteration)
                events.update(label, iteration)
        finally:
            if process.poll() is None:  # Ctrl-C or an error here: stop Caffe, keep the finished runs
                process.send_signal(signal.SIGINT)
                process.wait()
    os.replace(run.log + ".partial", run.log)
    with open(run.log, errors="replace") as f:
        text = f.read()
    reached = reached_iteration(text)
    weights = run.weights(iterations)
    ok = finished(text, process.returncode, iterations) and os.path.exists(weights)
    if ok:  # the run keeps its final weights only: the solver state is for resuming, not results
        state = weights[:-len(".caffemodel")] + ".solverstate"
        if os.path.exists(state):
            os.remove(state)
        files.write_atomic(run.done, json.dumps({"seconds": round(time.time() - started, 1), "iterations": iterations,
                                                 "weights": os.path.basename(weights)}), force=True)
    events.finish(label, iterations, "done in %.0f s" % (time.time() - started) if ok else
                  "FAILED" if not STOP.is_set() else "stopped at iteration %d" % reached)
    return ok, _why(text.splitlines())


def reached_iteration(text):
    """The last iteration a `caffe train` log reports (0 if none)."""
    return max(map(int, ITERATION.findall(text)), default=0)


def finished(text, returncode, iterations):
    """Whether a `caffe train` run with log `text` and exit code `returncode` trained all of its
    `iterations`. Exit code 0 and "Optimization Done." are not enough: on SIGINT (Ctrl-C) Caffe
    stops early, yet prints that line and exits 0; only a log that reached max_iter is finished."""
    return (returncode == 0 and "Optimization Done." in text and "Optimization stopped early." not in text
            and reached_iteration(text) >= iterations)


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


def run_experiment(experiment, out_dir, data_dir, keywords, source=None, jobs=1, events=None):
    """Train every unfinished run of `experiment`; returns (runs, failed runs). `keywords` turns a
    configuration's expand_net arguments into expand_net keywords; `events` (an `Events`) hears
    about the progress."""
    from . import datasets
    events = events or Events()
    check_configurations(experiment, keywords)  # before any data is made: a bad one is one line now
    subset = "%s_%s_%s" % (experiment.dataset, experiment.train_count or "all", experiment.test_count or "all")
    if source:  # the user's own files get their own folder, beside the embedded data's
        subset += "_" + hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:8]
    data = datasets.prepare(experiment.dataset, os.path.join(data_dir, subset), experiment.train_count,
                            experiment.test_count, source, log=events.say)
    runs = plan_runs(experiment, out_dir)
    todo = [run for run in runs if not run.finished]
    if len(todo) < len(runs):
        events.say("%d of %d runs already finished in %s; running the other %d"
                   % (len(runs) - len(todo), len(runs), out_dir, len(todo)))
    solvers = [build_run(experiment, run, data, keywords(experiment.stage(run.configuration).arguments))
               for run in todo]
    nets = [prototxt.read(os.path.join(run.directory, "net.prototxt")) for run in todo]
    native_needed = any(is_native(layer) for net in nets for layer in net.get_all("layer"))
    preload = native.build() if native_needed else None  # `caffe` meets type "DropIn" only preloaded
    events.start(sum(experiment.stage(run.configuration).iterations for run in todo))
    failed = []
    # Set when a run ends (finished or not): a chained run waits for the one it starts from. Runs
    # are submitted in plan order (the earlier stage first), so the awaited one has already started.
    ended = {(run.configuration, run.seed): threading.Event() for run in todo}

    def one(run, solver):
        try:
            after = experiment.stage(run.configuration).after
            if after is not None and (after, run.seed) in ended:
                ended[after, run.seed].wait()
            if STOP.is_set():
                return
            weights = start_weights(experiment, run, out_dir)
            missing = [path for path in weights if not os.path.exists(path)]
            if missing:
                failed.append(run)
                events.say("run %s not started: it starts from %s, which its configuration \"%s\" did not leave"
                           % (run.directory, missing[0], after))
                return
            iterations = experiment.stage(run.configuration).iterations
            ok, tail = train(run, solver, events, iterations, threads=1 if jobs > 1 else None, preload=preload,
                             weights=weights)
            if not ok and not STOP.is_set():
                failed.append(run)
                events.say("run %s failed; the end of its log %s:\n  %s" % (run.directory, run.log, "\n  ".join(tail)))
        finally:
            ended[run.configuration, run.seed].set()

    STOP.clear()
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            for future in [pool.submit(one, run, solver) for run, solver in zip(todo, solvers)]:
                future.result()
        except KeyboardInterrupt:
            STOP.set()
            raise
    return runs, failed
