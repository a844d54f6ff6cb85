"""Running an experiment (`config.Experiment`): every configuration x seed trained with the real
`caffe train`, two runs at a time by default, or each as a task on a Dask cluster.

A configuration's expand_net arguments become `expand_net` keywords through the `keywords`
function the caller gives (the command line's own parser), so a run builds exactly the net the
command line would. Each run lives in OUT/<configuration>/seed<N>/ (net, solver, caffe.log, its
final weights snapshot_iter_N.caffemodel, record.json; see `training`). A configuration chained
"after" another starts from that configuration's final weights of the same seed (`caffe train
--weights=`), so it waits for it; a net with initial weights (`--replica-init identity`) has them
written beside it as init.caffemodel and loaded too.

A run is finished when its record matches its definition (`definition`: arguments, iterations,
solver fields, dataset, counts, seed, and the chain before it) and its final weights are there;
finished runs are skipped when the experiment is run again, a run whose definition changed is
started over (one line says what changed), an unfinished one resumes from its latest snapshot.
Ctrl-C (or SIGTERM, SIGHUP) stops the runs going on, each with a snapshot to resume from; a
failed run is reported with its log's last lines and the others go on.
"""
import concurrent.futures
import hashlib
import json
import os
import threading
import uuid

from .. import files
from ..errors import ConfigError, clip
from ..netgen import identity, prototxt, templates
from ..netgen.expand import expand_net
from ..netgen.plan import PRESETS
from ..netgen.vocabulary import is_native
from .config import slug
from .training import Events, Run, Task, execute, not_started, stop, stopped

__all__ = ["Events", "Run", "plan_runs", "definition", "run_experiment"]


def definition(experiment, name, seed, source=None):
    """What defines configuration `name`'s run of `seed`: what it trains, on what, and the chain before it."""
    stage = experiment.stage(name)
    return {"arguments": stage.arguments, "iterations": stage.iterations, "solver": experiment.solver or {},
            "dataset": experiment.dataset, "source": source and os.path.abspath(source),
            "train_count": experiment.train_count, "test_count": experiment.test_count,
            "test_interval": experiment.test_interval, "seed": seed,
            "after": None if stage.after is None else definition(experiment, stage.after, seed, source)}


def plan_runs(experiment, out_dir, source=None):
    # Seed by seed, so that every configuration has a first result early; a chained configuration
    # after the one it starts from. Absolute folders: solverstates name their weights by path.
    return [Run(name, seed, os.path.join(os.path.abspath(out_dir), slug(name), "seed%d" % seed),
                definition(experiment, name, seed, source))
            for seed in experiment.seeds for name in experiment.ordered()]


def changes(old, new):
    """What differs between two definitions, in words: 'iterations 2000 -> 3000, seed 1 -> 2'."""
    keys = list(new) + [key for key in old if key not in new]
    return ", ".join("%s %s -> %s" % (key, json.dumps(old.get(key)), json.dumps(new.get(key)))
                     for key in keys if old.get(key) != new.get(key))


def start_over(run, restart, say):
    """Clear a run's folder of an earlier definition's results (or all of them with `restart`)."""
    record = run.record()
    old = (record or {}).get("definition")
    if not restart and (record is None or old == run.definition):
        return
    if not restart:
        say("run %s: its definition changed (%s); starting it over"
            % (run.directory, clip(changes(old, run.definition))))
    for name in os.listdir(run.directory) if os.path.isdir(run.directory) else []:
        if name.startswith("snapshot_iter_") or name in ("caffe.log", "record.json", "done.json"):
            os.remove(os.path.join(run.directory, name))


INIT_WEIGHTS = "init.caffemodel"


def start_weights(experiment, run, out_dir):
    """The .caffemodel files `caffe train --weights=` loads for `run`, in order: the final weights
    of the run it is chained after, then its own initial weights (if build_run wrote them)."""
    stage = experiment.stage(run.configuration)
    found = []
    if stage.after is not None:
        folder = os.path.join(os.path.abspath(out_dir), slug(stage.after), "seed%d" % run.seed)
        before = Run(stage.after, run.seed, folder)
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
        stage = experiment.stage(name)
        if stage.after is not None and keywords(stage.arguments).get("weights"):
            raise ConfigError('configuration "%s": "after" and --weights both give its start (the chained run\'s '
                              'final weights, a trained model); give one of them' % clip(name))
        try:
            built = _expand(keywords(stage.arguments), data)
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


def build_run(experiment, run, data, keywords, snapshot_every=None):
    """Write the run's net and solver (expand_net with `keywords`, pointed at `data`), and its
    INIT_WEIGHTS when the net has initial weights; return the solver's path. Caffe snapshots every
    `snapshot_every` iterations (default: about a tenth of the run)."""
    built = _expand(dict(keywords, dropin_seed=run.seed), data)  # reproducible masks per seed
    iterations = experiment.stage(run.configuration).iterations if run.configuration in experiment.configurations \
        else experiment.iterations
    net = built.net
    os.makedirs(run.directory, exist_ok=True)
    net_path = os.path.join(run.directory, "net.prototxt")
    solver = _solver(experiment, built)
    test_batch = _test_batch(net)
    for key, value in (("net", net_path), ("max_iter", iterations),
                       ("test_interval", min(experiment.test_interval, iterations)),
                       ("test_iter", max(1, -(-data["test_count"] // test_batch))),
                       ("display", max(1, experiment.test_interval // 4)), ("random_seed", run.seed),
                       ("snapshot", snapshot_every or max(1, iterations // 10)), ("snapshot_after_train", True),
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


def run_experiment(experiment, out_dir, data_dir, keywords, source=None, jobs=1, events=None, restart=False,
                   snapshot_every=None, snapshot_minutes=10, cluster=None):
    """Train every unfinished run of `experiment`; returns (runs, failed runs). `keywords` turns a
    configuration's expand_net arguments into expand_net keywords; `events` (an `Events`) hears
    about the progress. `restart` starts every run over; `snapshot_every` and `snapshot_minutes`
    say how often runs snapshot; `cluster` (a `cluster.Cluster`) trains them there, else `jobs` at a time here."""
    from . import datasets
    events = events or Events()
    check_configurations(experiment, keywords)  # before any data is made: a bad one is one line now
    if cluster is not None:  # every worker must see these folders where the client does
        cluster.check_shared([out_dir, data_dir])
    subset = "%s_%s_%s" % (experiment.dataset, experiment.train_count or "all", experiment.test_count or "all")
    if source:  # the user's own files get their own folder, beside the embedded data's
        subset += "_" + hashlib.sha256(os.path.abspath(source).encode()).hexdigest()[:8]
    data = datasets.prepare(experiment.dataset, os.path.abspath(os.path.join(data_dir, subset)),
                            experiment.train_count, experiment.test_count, source, log=events.say)
    runs = plan_runs(experiment, out_dir, source)
    for run in runs:
        start_over(run, restart, events.say)
    todo = [run for run in runs if not run.finished]
    if len(todo) < len(runs):
        events.say("%d of %d runs already finished in %s; running the other %d"
                   % (len(runs) - len(todo), len(runs), out_dir, len(todo)))
    tag = uuid.uuid4().hex
    tasks = []
    for run in todo:
        stage = experiment.stage(run.configuration)
        solver = build_run(experiment, run, data, keywords(stage.arguments), snapshot_every)
        net = prototxt.read(os.path.join(run.directory, "net.prototxt"))
        tasks.append(Task(run, solver, stage.iterations, tuple(start_weights(experiment, run, out_dir)),
                          any(is_native(layer) for layer in net.get_all("layer")),
                          1 if jobs > 1 and cluster is None else None, 60 * snapshot_minutes, tag))
    events.start(sum(task.iterations for task in tasks))
    after = {(run.configuration, run.seed): experiment.stage(run.configuration).after for run in todo}
    if cluster is not None:
        return runs, cluster.train(tasks, after, events)
    return runs, _train_here(tasks, after, jobs, events)


def _train_here(tasks, after, jobs, events):
    """Train `tasks` on this machine, `jobs` at a time; a chained one after the one it starts from."""
    failed = []
    # Set when a run ends (finished or not): a chained run waits for the one it starts from. Runs
    # are submitted in plan order (the earlier stage first), so the awaited one has already started.
    ended = {(task.run.configuration, task.run.seed): threading.Event() for task in tasks}

    def one(task):
        run = task.run
        try:
            before = (after[run.configuration, run.seed], run.seed)
            if before in ended:
                ended[before].wait()
            if not_started(task, events):
                failed.append(run)
                return
            ok, tail = execute(task, events)
            if not ok and not stopped(task.tag):
                failed.append(run)
                events.say("run %s failed; the end of its log %s:\n  %s" % (run.directory, run.log, "\n  ".join(tail)))
        finally:
            ended[run.configuration, run.seed].set()

    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            for future in [pool.submit(one, task) for task in tasks]:
                future.result()
        except KeyboardInterrupt:
            stop(tasks[0].tag if tasks else "")
            raise
    return failed
