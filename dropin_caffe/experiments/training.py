"""One run's `caffe train`, to its end across interruptions: snapshots as it goes, resume from the
latest, a lock on its folder, and a record of what defines it.

A run lives in its own folder (`Run.directory`, an absolute path: a solverstate names its weights
by the path Caffe wrote them to, and cluster workers must find them there too):

- record.json: the run's definition (what `runner.definition` says defines it), when it started,
  each resume (from which snapshot, at which iteration) and, once done, its final weights.
- caffe.log: every attempt's log, appended, so curves and results.csv are whole after a resume.
- snapshot_iter_N.caffemodel/.solverstate: Caffe's snapshots. Caffe writes the weights, then logs
  "Snapshotting solver state to ... N.solverstate" and writes that file; a pair is complete once
  a later log line follows. The previous pair is deleted only then; the final weights are kept,
  the last solverstate removed once the run is finished.
- lock: held (flock) by the process training the run and inherited by its caffe, so a second
  attempt (a cluster task run again after its worker died) waits until no writer is left. Caffe
  also gets SIGKILL when the thread that started it dies (PR_SET_PDEATHSIG).

A resumed run is not bit-identical to an uninterrupted one: Caffe's data layers start again at the
start of their database and the RNGs from their seeds. The DropIn counter is in the weights, so
the schedule goes on where it was.
"""
import contextlib
import ctypes
import dataclasses
import fcntl
import json
import os
import re
import signal
import subprocess
import time
import typing

from .. import files

ITERATION = re.compile(r"Iteration (\d+)")
_STATE = re.compile(r"Snapshotting solver state to (?:binary proto|HDF5) file (\S+?_iter_(\d+)\.solverstate(?:\.h5)?)")
RESUMING = "dropin_caffe: resuming from"  # the line a resumed attempt starts its part of the log with
# Set by stop(): the runs of an invocation (its tag) stop Caffe and no new one starts.
_STOPPED = set()


def stop(tag):
    """Stop every run started under `tag` (Ctrl-C): Caffe is sent SIGINT, snapshots and exits."""
    _STOPPED.add(tag)


def stopped(tag):
    return tag in _STOPPED


@dataclasses.dataclass
class Run:
    """One configuration x seed, in its folder; `definition` is what must match for its results to count."""
    configuration: str
    seed: int
    directory: str
    definition: typing.Optional[dict] = None

    @property
    def label(self):
        return "%s, seed %d" % (self.configuration, self.seed)

    @property
    def log(self):
        return os.path.join(self.directory, "caffe.log")

    @property
    def record_path(self):
        return os.path.join(self.directory, "record.json")

    def weights(self, iterations):
        """The .caffemodel Caffe leaves at iteration `iterations` (the final weights, at max_iter)."""
        return os.path.join(self.directory, "snapshot_iter_%d.caffemodel" % iterations)

    def record(self):
        """The run's record.json as a dict, or None when there is none (or it is unreadable)."""
        try:
            with open(self.record_path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def write_record(self, record):
        files.write_atomic(self.record_path, json.dumps(record, indent=1, sort_keys=True), force=True)

    @property
    def finished(self):
        """Its record matches its definition and says it finished, and the final weights are there."""
        record = self.record() or {}
        done = record.get("finished") or {}
        return (record.get("definition") == self.definition and bool(done.get("weights"))
                and os.path.exists(os.path.join(self.directory, done["weights"])))


@dataclasses.dataclass
class Task:
    """What training a run needs, in a form a cluster worker can take: the run, its solver, its
    iterations, the .caffemodel files it starts from (`--weights`, on a fresh start only), whether
    its net has native layers, the BLAS threads (None: BLAS decides), a snapshot at least every
    `snapshot_seconds` (0: only Caffe's own `snapshot` interval), and its invocation's stop tag."""
    run: Run
    solver: str
    iterations: int
    weights: typing.Tuple[str, ...] = ()
    native: bool = False
    threads: typing.Optional[int] = None
    snapshot_seconds: float = 0
    tag: str = ""


class Events:
    """What a running experiment reports; the command line draws it as a progress bar."""

    def start(self, total_iterations):
        """Training starts: `total_iterations` over all the runs to do."""

    def update(self, label, iteration):
        """Run `label` is at `iteration`."""

    def finish(self, label, iterations, verdict):
        """Run `label` ended (`verdict`: "done in N s", "stopped at iteration N" or "FAILED")."""

    def say(self, text):
        """A message for the user (data preparation, a failed run's log)."""


class LogWatch:
    """Follows a growing `caffe train` log from `offset`: its last iteration, and each snapshot
    once it is complete (a line follows the one Caffe logs before writing the solverstate)."""

    def __init__(self, path, offset=0):
        self.path, self.offset, self.iteration = path, offset, 0
        self._pending = None  # (iteration, solverstate) logged, not yet known complete

    def poll(self):
        """Read what was added; return the (iteration, solverstate) pairs completed since last time."""
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                text = f.read().decode(errors="replace")
        except OSError:
            return []
        whole = text[:text.rfind("\n") + 1]  # a line still being written waits for the next poll
        self.offset += len(whole.encode(errors="replace"))
        completed = []
        for line in whole.splitlines():
            if line.startswith(RESUMING):  # the attempt before ended (killed?) right after that line
                self._pending = None
                continue
            if self._pending:
                completed.append(self._pending)
                self._pending = None
            state = _STATE.search(line)
            if state:
                self._pending = (int(state.group(2)), state.group(1))
            found = ITERATION.findall(line)
            if found:
                self.iteration = int(found[-1])
        return completed


def latest_snapshot(run):
    """(iteration, solverstate) of the run's newest complete snapshot whose two files exist, or None."""
    found = [(i, state) for i, state in LogWatch(run.log).poll()
             if os.path.exists(state) and os.path.exists(run.weights(i))]
    return max(found) if found else None


def _snapshot_files(run):
    """{iteration: [paths]} of the run's snapshot files."""
    found = {}
    for name in os.listdir(run.directory):
        match = re.fullmatch(r"snapshot_iter_(\d+)\.(caffemodel|solverstate)(\.h5)?", name)
        if match:
            found.setdefault(int(match.group(1)), []).append(os.path.join(run.directory, name))
    return found


def drop_snapshots_before(run, iteration=float("inf")):
    """Delete the snapshot pairs older than `iteration` (a complete one): only the newest is needed.
    Without `iteration`, every snapshot goes (a run that starts afresh)."""
    for older, paths in _snapshot_files(run).items():
        if older < iteration:
            for path in paths:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)


@contextlib.contextmanager
def locked(run, say=lambda text: None):
    """Hold the run folder's lock; yields its file descriptor (for Caffe to inherit)."""
    os.makedirs(run.directory, exist_ok=True)
    with open(os.path.join(run.directory, "lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say("run %s: waiting for an earlier attempt's caffe to end" % run.directory)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield lock.fileno()


_PR_SET_PDEATHSIG = 1
_LIBC = ctypes.CDLL(None, use_errno=True)


def _die_with_parent():
    """In the child before exec: SIGKILL when the thread that started it ends (a killed runner or worker)."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def not_started(task, events):
    """Whether `task` cannot start (stopped, or the weights it starts from are missing: it says so)."""
    if stopped(task.tag):
        return True
    missing = [path for path in task.weights if not os.path.exists(path)]
    if missing:
        events.say("run %s not started: it starts from %s, which the run before it did not leave"
                   % (task.run.directory, missing[0]))
    return bool(missing)


def execute(task, events=None):
    """Train `task.run` to its end, from its latest complete snapshot if it has one. Returns
    (finished, the log's lines that say why not). The caller made its folder (net, solver, record)."""
    events, run = events or Events(), task.run
    with locked(run, events.say) as lock:
        if run.finished:  # a cluster task run again after it had finished
            return True, []
        record = run.record()
        resume = latest_snapshot(run) if record and record.get("definition") == run.definition else None
        if resume:
            record.setdefault("resumes", []).append({"from": os.path.basename(resume[1]), "iteration": resume[0],
                                                     "at": time.strftime("%Y-%m-%d %H:%M:%S")})
        else:
            record = {"definition": run.definition, "started": time.strftime("%Y-%m-%d %H:%M:%S"), "resumes": []}
            drop_snapshots_before(run)
        record["finished"] = None
        run.write_record(record)
        ok, tail, seconds = _train(task, events, resume, lock)
        record["seconds"] = round(record.get("seconds", 0) + seconds, 1)
        if ok:
            final = run.weights(task.iterations)
            drop_snapshots_before(run, task.iterations)
            with contextlib.suppress(FileNotFoundError):  # the solver state is for resuming, not results
                os.remove(final[:-len(".caffemodel")] + ".solverstate")
            record["finished"] = {"weights": os.path.basename(final), "iterations": task.iterations}
        run.write_record(record)
        return ok, tail


def _train(task, events, resume, lock):
    """One `caffe train` process for `task`, fresh or from `resume` (iteration, solverstate).
    Returns (finished, why not, seconds)."""
    run = task.run
    environ = dict(os.environ, GLOG_logtostderr="1", GLOG_minloglevel="0")
    if task.native:
        from .. import native  # built on first use on each machine that trains a native net
        environ["LD_PRELOAD"] = os.pathsep.join(p for p in (native.build(), environ.get("LD_PRELOAD")) if p)
    if task.threads:
        environ["OPENBLAS_NUM_THREADS"] = str(task.threads)
    command = ["caffe", "train", "--solver=" + task.solver, "--sighup_effect=snapshot", "--sigint_effect=stop"]
    if resume:  # Caffe refuses --weights with --snapshot: the snapshot holds them all
        command.append("--snapshot=" + resume[1])
    elif task.weights:
        command.append("--weights=" + ",".join(task.weights))
    started = last_snapshot = time.time()
    with open(run.log, "a" if resume else "w") as log:
        if resume:
            log.write("%s %s at iteration %d\n" % (RESUMING, os.path.basename(resume[1]), resume[0]))
            log.flush()
        attempt = log.tell()
        watch = LogWatch(run.log, attempt)
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environ, pass_fds=(lock,),
                                   preexec_fn=_die_with_parent)
        try:
            while process.poll() is None and not stopped(task.tag):
                time.sleep(0.5)
                for iteration, _ in watch.poll():
                    drop_snapshots_before(run, iteration)
                    last_snapshot = time.time()
                events.update(run.label, watch.iteration)
                if task.snapshot_seconds and time.time() - last_snapshot > task.snapshot_seconds:
                    process.send_signal(signal.SIGHUP)  # iterations are slow: ask for a snapshot now
                    last_snapshot = time.time()
        finally:
            if process.poll() is None:  # stopped, or an error here: Caffe snapshots and exits
                process.send_signal(signal.SIGINT)
                process.wait()
    for iteration, _ in watch.poll():
        drop_snapshots_before(run, iteration)
    with open(run.log, "rb") as f:  # this attempt's part of the log
        f.seek(attempt)
        this_attempt = f.read().decode(errors="replace")
    ok = finished(this_attempt, process.returncode, task.iterations) and os.path.exists(run.weights(task.iterations))
    seconds = time.time() - started
    events.finish(run.label, task.iterations, "done in %.0f s" % seconds if ok else
                  "stopped at iteration %d" % reached_iteration(this_attempt) if stopped(task.tag) else "FAILED")
    return ok, _why(this_attempt.splitlines()), seconds


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

