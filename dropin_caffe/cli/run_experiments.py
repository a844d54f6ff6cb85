"""run_experiments: train an experiment's configurations x seeds with `caffe train`, then report.

Configurations are expand_net arguments; this command's expand_net parser turns them into the
keywords the runner builds each net with. Progress is one status line with an ETA.
"""
import argparse
import contextlib
import os
import signal
import threading
import time

from .. import env
from ..errors import ConfigError
from ..experiments import config, report, runner
from ..netgen import prototxt
from ..netgen.vocabulary import our_layer
from . import expand_net
from .common import Parser, shell


def parser():
    listing = "\n".join("  %-16s %s" % (name, e.description) for name, e in config.BUILTIN.items())
    p = Parser(prog="run_experiments.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
               description="Train an experiment's configurations x seeds with the real `caffe train`, "
                           "then write results.csv, plots and summary.md.",
               epilog="built-in experiments:\n%s\nor a JSON file: see dropin_caffe/experiments/config.py" % listing)
    p.add_argument("experiment", help="a built-in experiment or a JSON file")
    p.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="run these seeds instead")
    p.add_argument("--iterations", type=int, metavar="N", help="train each run for N iterations instead")
    p.add_argument("--dataset", choices=["mnist", "fashion_mnist", "cifar10"], help="use this dataset instead")
    p.add_argument("--source", metavar="PATH", help="your own data: MNIST IDX files or CIFAR-10 batches "
                   "(a directory or archive); default: the embedded MNIST / Fashion-MNIST")
    p.add_argument("-o", "--output-dir", metavar="DIR", help="default: out/EXPERIMENT")
    p.add_argument("--data-dir", metavar="DIR", default=os.path.join("out", "data"),
                   help="where the LMDBs are made and reused (default out/data)")
    p.add_argument("--jobs", type=int, default=2, metavar="N", help="runs at once (default 2, one core each)")
    p.add_argument("--report-only", action="store_true", help="only parse the finished runs and plot")
    p.add_argument("--restart", action="store_true", help="start every run over instead of resuming or skipping it")
    p.add_argument("--snapshot-every", type=int, metavar="N", help="snapshot every N iterations "
                   "(default: a tenth of each run)")
    p.add_argument("--snapshot-minutes", type=float, default=10, metavar="M",
                   help="also snapshot when M minutes passed without one (default 10; 0: never)")
    p.add_argument("--cluster", metavar="tcp://HOST:PORT", help="train each run as a task of this Dask scheduler "
                   "(-o and --data-dir on a filesystem every worker sees)")
    p.add_argument("--runs-per-worker", type=int, default=1, metavar="N",
                   help="with --cluster: runs a worker takes at once (default 1)")
    return p


def keywords(arguments):
    """expand_net keywords from a configuration's expand_net arguments."""
    args = expand_net.parser().parse_args(list(arguments) + ["-o", "unused"])
    return expand_net.keywords(args)


class Progress(runner.Events):
    """One status line over all runs: percent of all iterations, the runs going on, an ETA."""

    def __init__(self, stream):
        self.total, self.finished, self.current = 0, 0, {}
        self.stream, self.tty = stream, stream.isatty()
        self.started = time.time()
        self.lock = threading.Lock()

    def start(self, total_iterations):
        self.total, self.started = total_iterations, time.time()

    def update(self, label, iteration):
        with self.lock:
            self.current[label] = iteration
            self._show()

    def finish(self, label, iterations, verdict):
        with self.lock:
            self.current.pop(label, None)
            self.finished += iterations
            self._show(message="%s: %s" % (label, verdict))

    def say(self, text):
        with self.lock:
            self._show(message=text, bar=self.total > 0)

    def _show(self, message=None, bar=True):
        done = self.finished + sum(self.current.values())
        elapsed = time.time() - self.started
        eta = "%dm%02ds" % divmod(int(elapsed / done * (self.total - done)), 60) if done else "?"
        filled = 30 * done // max(1, self.total)
        line = "[%s%s] %3d%%  eta %s  %s" % ("#" * filled, "." * (30 - filled), 100 * done // max(1, self.total), eta,
                                             "; ".join("%s it %d" % item for item in self.current.items()))
        if message:
            self.stream.write(("\r" + " " * 150 + "\r" if self.tty else "") + message + "\n")
        if bar and self.tty:  # a log file gets the messages alone: a bar in it is noise
            self.stream.write("\r" + line[:150].ljust(150))
        self.stream.flush()


def _experiment(args):
    """The experiment named by `args`, with the command line's overrides; its flags checked."""
    experiment = config.load(args.experiment)
    if args.seeds:
        experiment.seeds = args.seeds
    for flag, value, least in (("--iterations", args.iterations, 1), ("--jobs", args.jobs, 1),
                               ("--snapshot-every", args.snapshot_every, 1),
                               ("--snapshot-minutes", args.snapshot_minutes, 0)):
        if value is not None and value < least:
            raise ConfigError("%s must be >= %s, got %s" % (flag, least, value))
    if args.iterations is not None:
        experiment.iterations = args.iterations
        experiment.test_interval = min(experiment.test_interval, args.iterations)
    if args.dataset:
        experiment.dataset = args.dataset
    return experiment


def _run(argv, out, err):
    args = parser().parse_args(argv)
    experiment = _experiment(args)
    out_dir = args.output_dir or os.path.join("out", config.slug(experiment.name))
    if args.report_only:
        runs, failed = runner.plan_runs(experiment, out_dir, args.source), []
    else:
        try:
            with _stopped_by_signals(), _cluster(args) as cluster:
                runs, failed = runner.run_experiment(
                    experiment, out_dir, args.data_dir, keywords, args.source, args.jobs, Progress(err), args.restart,
                    args.snapshot_every, args.snapshot_minutes, cluster)
        except KeyboardInterrupt:
            runs = runner.plan_runs(experiment, out_dir, args.source)
            print("\nrun_experiments.py: stopped; %d of %d runs finished; run the same command to continue (the "
                  "others resume from their snapshots)" % (sum(run.finished for run in runs), len(runs)), file=err)
            return 130
    if failed and not any(run.finished for run in runs):  # nothing to report: say what failed
        print("%d runs failed (see above) and none finished; rerun the command to retry them" % len(failed), file=err)
        return 1
    _report(experiment, runs, failed, out_dir, args.report_only, out, err)
    if failed:
        print("%d runs failed (see above); rerun the command to retry them" % len(failed), file=err)
        return 1
    return 0


def _report(experiment, runs, failed, out_dir, report_only, out, err):
    """Write and print the report of the finished runs, what it leaves out, and the export command."""
    summary, picture = report.report(experiment, runs, out_dir)
    print(summary, file=out)
    print("\nplot: %s (and .svg); table: %s; every value: %s" % (
        picture, os.path.join(out_dir, "summary.md"), os.path.join(out_dir, "results.csv")), file=out)
    missing = {}
    for run in runs if report_only else []:  # runs that have not finished are not in the report
        if not run.finished:
            missing.setdefault(run.configuration, []).append(str(run.seed))
    if missing:
        print("not finished, so left out of the report: %s; run without --report-only to train them" % "; ".join(
            "%s (%s %s)" % (name, "seeds" if len(seeds) > 1 else "seed", ", ".join(seeds))
            for name, seeds in missing.items()), file=err)
    trained = [run for run in runs if run.finished and run not in failed and _has_dropin(run)]
    if trained:
        run = trained[0]
        print("a DropIn run's final weights as a stock Caffe net (likewise for the other %d DropIn runs):\n  %s"
              % (len(trained) - 1, env.command(["export_net", os.path.join(run.directory, "net.prototxt"),
                                                run.weights(experiment.stage(run.configuration).iterations), "-o",
                                                os.path.join(run.directory, "export")])), file=out)


@contextlib.contextmanager
def _cluster(args):
    """The Dask cluster of --cluster (connected, closed after), or None to train here."""
    if not args.cluster:
        yield None
        return
    from ..experiments.cluster import Cluster
    cluster = Cluster(args.cluster, args.runs_per_worker)
    try:
        yield cluster
    finally:
        cluster.close()


@contextlib.contextmanager
def _stopped_by_signals():
    """SIGTERM and SIGHUP (a closed terminal, a batch system's time limit, kill) stop the runs as
    Ctrl-C does; the first of the three is enough, later ones are ignored while the runs stop. A
    signal ignored at start (SIGHUP under nohup) stays ignored."""
    signals = [s for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP) if signal.getsignal(s) is not signal.SIG_IGN]

    def stop(signum, frame):
        for s in signals:
            signal.signal(s, signal.SIG_IGN)
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield
        return
    before = {s: signal.signal(s, stop) for s in signals}
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def _has_dropin(run):
    net = prototxt.read(os.path.join(run.directory, "net.prototxt"))
    return any(our_layer(layer) == "DropIn" for layer in net.get_all("layer"))


def main(argv=None, out=None, err=None):
    """tools/run_experiments.py EXPERIMENT [...]: 0 done, 1 some runs failed, 2 bad input, 130 Ctrl-C."""
    return shell("run_experiments.py", _run, argv, out, err)
