"""Reading Caffe training logs (`caffe train`, glog format) into tables, and writing them as CSV.

What a Caffe 1.0 solver logs, and what `parse_log` takes from it::

    I1127 04:57:21.029316  3131 solver.cpp:347] Iteration 500, Testing net (#0)
    I1127 04:57:21.029320  3131 solver.cpp:414]     Test net output #0: accuracy = 0.98
    I1127 04:57:21.029316  3131 solver.cpp:239] Iteration 500 (24.3 iter/s, 4.1s/100 iters), loss = 0.12
    I1127 04:57:21.029318  3131 solver.cpp:258]     Train net output #0: dropin3_p = 0.25
    I1127 04:57:21.029319  3131 solver.cpp:258]     Train net output #1: loss = 0.12 (* 1 = 0.12 loss)

- The glog prefix (level, date, time, thread, file:line) may be missing, as in logs captured
  through some wrappers; newer glog writes the year too. Both parse alike.
- "loss = X" on an Iteration line is the solver's loss, smoothed over `average_loss` iterations;
  it is the train loss here. "(N iter/s, Ts/D iters)" appears in some Caffe versions only, and
  is not to be trusted: Caffe 1.0 prints "1 iter/s, 0s/1 iters" for short display periods and
  3.8e+19 iter/s on the first line after a resume. So iterations/second come from the
  timestamps when the log has them, and only without them from the lapses T Caffe reports.
- Each "Testing net (#k)" is one test net; its outputs follow. A solver can have several.
- A resumed run ("Resuming from S.solverstate") continues the iterations. When several runs are
  in one log (appended), a run that starts at iteration k replaces what earlier runs logged from
  k on, so the tables hold what the surviving run computed.
- DropIn p: outputs named `p` or `<layer>_p` whose values all lie in [0, 1] (the generator names
  the DropIn layer's second top `<layer>_p` and gives it loss_weight 0).
- An output with several elements is logged one line per element under the same name; the
  records keep every line, the tables by iteration the last.
- `finished` is true when the last run in the log reached "Optimization Done.".
"""
import calendar
import collections
import csv
import gzip
import io
import math
import re

from .. import files
from ..errors import ConfigError

Record = collections.namedtuple("Record", "iteration phase net name value")
Record.__doc__ = """One logged value: phase "train" or "test", test net index (0 for train), output name."""

FIXED_COLUMNS = ("run", "configuration", "seed", "iteration", "train_loss")

_GLOG_PREFIX = re.compile(r"[IWEF](\d{4})?(\d\d)(\d\d) (\d\d):(\d\d):(\d\d(?:\.\d+)?)\s+\d+\s+[^\s\]]+:\d+\] ")
_TRAIN = re.compile(r"Iteration (\d+)(?: \((\S+) iter/s, (\S+)s/(\d+) iters\))?, loss = (\S+)")
_TESTING = re.compile(r"Iteration (\d+), Testing net \(#(\d+)\)")
_OUTPUT = re.compile(r"(Train|Test) net output #\d+: (\S+) = (\S+)")
_RESUME = re.compile(r"(?:Resuming from|Restoring previous solver status from) (.+?)\s*$")
_SNAPSHOT = re.compile(r"Snapshotting to (?:binary proto|HDF5) file (.+?)\s*$")
_SOLVING = re.compile(r"^\s*Solving ")
_DONE = "Optimization Done."


def _number(text):
    """Caffe prints floats with iostream defaults; nan may come as "-nan", odd ones become nan."""
    try:
        return float(text)
    except ValueError:
        return math.nan


def _seconds(match, default_year):
    """Seconds since the epoch of a glog timestamp (glog before 0.6 writes no year)."""
    year, month, day, hour, minute, second = match.groups()
    whole = calendar.timegm((int(year or default_year), int(month), int(day), int(hour), int(minute), 0))
    return whole + float(second)


def is_dropin_p(name, values):
    """Whether an output is a DropIn layer's p top: named `p` or `..._p`, every value in [0, 1]."""
    return (name == "p" or name.endswith("_p")) and all(0 <= v <= 1 for v in values)


class Log:
    """What one Caffe training log holds, as tables by iteration.

    records: every Train/Test net output, as `Record`s in log order (superseded runs removed).
    train_loss: {iteration: the solver's (smoothed) loss from the Iteration lines}.
    reported_speed: {iteration: the "N iter/s" Caffe printed, when it did}.
    finished: the last run reached "Optimization Done.".
    resumed_from: the snapshots (.solverstate) runs in this log resumed from.
    snapshots: the files Caffe said it snapshotted to (weights).
    runs: how many solver runs the log holds (2 for a run and its appended resume).
    """

    def __init__(self, source):
        self.source = source
        self.records = []
        self.train_loss = {}
        self.reported_speed = {}
        self.finished = False
        self.resumed_from = []
        self.snapshots = []
        self.runs = 0
        self._lapses = []  # (run, seconds, iterations) as Caffe reported them
        self._clock = []  # (run, iteration, seconds) from timestamps

    def __repr__(self):
        return "<Log %s: iterations %s..%s, %d records%s>" % (
            self.source, self.first_iteration, self.last_iteration, len(self.records),
            ", finished" if self.finished else "")

    @property
    def iterations(self):
        """Every iteration something was logged at, sorted."""
        return sorted(set(self.train_loss) | {r.iteration for r in self.records})

    @property
    def first_iteration(self):
        return self.iterations[0] if self.iterations else None

    @property
    def last_iteration(self):
        return self.iterations[-1] if self.iterations else None

    def outputs(self, phase):
        """{(net, name): {iteration: value}} for "train" or "test", in the order Caffe logs them."""
        table = {}
        for record in self.records:
            if record.phase == phase:
                table.setdefault((record.net, record.name), {})[record.iteration] = record.value
        return dict(sorted(table.items(), key=lambda item: item[0][0]))

    def test_outputs(self):
        """{(test net index, name): {iteration: value}}, DropIn p outputs included.

        Where a test net's loss is NaN or infinite (the net diverged), its other outputs at that
        test are NaN too: Caffe's Accuracy counts an image whose scores are all NaN as right (no
        class scores higher than the true one), so a diverged net logs accuracy 1.
        """
        table = self.outputs("test")
        diverged = {(net, i) for (net, name), series in table.items() if "loss" in name.lower()
                    for i, value in series.items() if not math.isfinite(value)}
        kept = set(self.dropin_names)
        return {(net, name): {i: math.nan if (net, i) in diverged and name not in kept else value
                              for i, value in series.items()}
                for (net, name), series in table.items()}

    @property
    def diverged(self):
        """The train loss or a test net's loss became NaN or infinite."""
        return any(not math.isfinite(v) for v in self.train_loss.values()) or any(
            not math.isfinite(r.value) for r in self.records if r.phase == "test" and "loss" in r.name.lower())

    @property
    def dropin_names(self):
        """Names of the outputs that are DropIn p tops, in log order."""
        values = {}
        for record in self.records:
            values.setdefault(record.name, []).append(record.value)
        return [name for name, seen in values.items() if is_dropin_p(name, seen)]

    def dropin_p(self):
        """{p output name: {iteration: p}}, from the TRAIN net, and from TEST where TRAIN was not logged.

        TRAIN logs p at the iteration it trains; a test at iteration k sees the same counter, except
        the final test, which Caffe runs after one extra TRAIN forward (it logs p(N + 1)).
        """
        table = {name: {} for name in self.dropin_names}
        for phase in ("test", "train"):
            for (_, name), series in self.outputs(phase).items():
                if name in table:
                    table[name].update(series)
        return {name: dict(sorted(series.items())) for name, series in table.items()}

    @property
    def iterations_per_second(self):
        """Solver iterations per wall-clock second (testing and snapshots included), or None.

        From the timestamps of the Iteration lines of each run; without timestamps, from the
        lapses Caffe reported ("Ts/D iters"), when they add up to more than zero.
        """
        spans = {}
        for run, iteration, seconds in self._clock:
            first, last = spans.get(run, ((iteration, seconds), (iteration, seconds)))
            spans[run] = (first, (iteration, seconds))
        iterations = sum(last[0] - first[0] for first, last in spans.values())
        seconds = sum(last[1] - first[1] for first, last in spans.values())
        if seconds > 0 and iterations > 0:
            return iterations / seconds
        seconds = sum(lapse for _, lapse, _ in self._lapses if lapse > 0)
        iterations = sum(count for _, lapse, count in self._lapses if lapse > 0)
        return iterations / seconds if seconds > 0 else None

    def shift(self, offset):
        """Count iterations from `offset` (a run chained after `offset` iterations of another), in place;
        returns self. Speeds are differences, so they stay."""
        self.records = [r._replace(iteration=r.iteration + offset) for r in self.records]
        self.train_loss = {i + offset: v for i, v in self.train_loss.items()}
        self.reported_speed = {i + offset: v for i, v in self.reported_speed.items()}
        self._clock = [(run, i + offset, seconds) for run, i, seconds in self._clock]
        return self

    # building, used by parse_log
    def _start_run(self, iteration):
        """A new solver run begins at `iteration`: it supersedes what earlier runs logged from there on."""
        self.runs += 1
        self.finished = False
        self.records = [r for r in self.records if r.iteration < iteration]
        for table in (self.train_loss, self.reported_speed):
            for stale in [i for i in table if i >= iteration]:
                del table[stale]


def parse_log(text, source="<text>"):
    """A `Log` of the Caffe training log `text`; lines that are not the solver's are ignored.

    Never fails on content: a log with no Iteration lines gives a Log with no iterations
    (`read_log` refuses those).
    """
    log = Log(source)
    new_run = True  # the first Iteration line starts a run, as does one after "Solving ..."/"Resuming"
    iteration, test_net, test_iteration = None, 0, None
    year, last_seconds = 2000, None  # a leap year, so "0229" is a date
    for line in text.splitlines():
        stamp = _GLOG_PREFIX.search(line)
        message = line[stamp.end():] if stamp else line
        seconds = None
        if stamp:
            seconds = _seconds(stamp, year)
            if stamp.group(1) is None and last_seconds is not None and seconds < last_seconds - 86400:
                year += 1  # a log without years that ran over New Year
                seconds = _seconds(stamp, year)
            last_seconds = seconds
        if _DONE in message:
            log.finished = True
            continue
        train = _TRAIN.search(message)
        testing = None if train else _TESTING.search(message)
        if train or testing:
            at = int((train or testing).group(1))
            latest = log.last_iteration
            if new_run or (latest is not None and at < latest):
                log._start_run(at)
                new_run = False
            if seconds is not None:
                log._clock.append((log.runs, at, seconds))
            if train:
                iteration = at
                log.train_loss[at] = _number(train.group(5))
                if train.group(2) is not None:
                    log.reported_speed[at] = _number(train.group(2))
                    log._lapses.append((log.runs, _number(train.group(3)), int(train.group(4))))
            else:
                test_iteration, test_net = at, int(testing.group(2))
            continue
        output = _OUTPUT.search(message)
        if output:
            phase = output.group(1).lower()
            at = iteration if phase == "train" else test_iteration
            if at is not None:
                log.records.append(Record(at, phase, test_net if phase == "test" else 0,
                                          output.group(2), _number(output.group(3))))
            continue
        found = _RESUME.search(message)
        if found:
            log.resumed_from.append(found.group(1))
            new_run = True
            continue
        found = _SNAPSHOT.search(message)
        if found:
            log.snapshots.append(found.group(1))
            continue
        if _SOLVING.search(message):
            new_run = True
    return log


def read_log(path):
    """`parse_log` of the file at `path` (plain or .gz); raises ConfigError if it is not a Caffe training log."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as stream:
            text = stream.read()
    except FileNotFoundError:
        raise ConfigError("log %s does not exist; give the path of a caffe train log" % path) from None
    except files.READ_ERRORS as error:
        raise ConfigError("log %s cannot be read (%s); give a readable text file"
                          % (path, files.read_error_reason(error))) from None
    log = parse_log(text, source=str(path))
    if not log.iterations:
        raise ConfigError("%s is not a Caffe training log: no \"Iteration N\" lines from a solver; give the "
                          "output of caffe train (glog on stderr)" % path)
    return log


def test_column(net, name):
    """The CSV column of test net `net`'s output `name`, e.g. test0/accuracy."""
    return "test%d/%s" % (net, name)


def p_column(name):
    """The CSV column of a DropIn p output, e.g. p/conv2_1_dropin_p."""
    return "p/" + name


def rows_for(log, run, configuration, seed):
    """CSV rows (dicts) of one log: one per iteration with anything logged, missing values None.

    Columns: FIXED_COLUMNS, then one per test output other than DropIn p (`test_column`), then
    one per DropIn p output (`p_column`).
    """
    dropins = log.dropin_p()
    tests = {test_column(net, name): series for (net, name), series in log.test_outputs().items()
             if name not in dropins}
    ps = {p_column(name): series for name, series in dropins.items()}
    rows = []
    for iteration in log.iterations:
        row = {"run": run, "configuration": configuration, "seed": seed, "iteration": iteration,
               "train_loss": log.train_loss.get(iteration)}
        for column, series in list(tests.items()) + list(ps.items()):
            row[column] = series.get(iteration)
        rows.append(row)
    return rows


def csv_columns(rows):
    """FIXED_COLUMNS, then the test columns, then the p columns, each group in order of first appearance."""
    seen = []
    for row in rows:
        seen.extend(column for column in row if column not in seen and column not in FIXED_COLUMNS)
    tests = [c for c in seen if not c.startswith("p/")]
    return list(FIXED_COLUMNS) + tests + [c for c in seen if c.startswith("p/")]


def _cell(value):
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)  # shortest text that reads back as the same float; nan stays nan
    return str(value)


def write_csv(rows, path, force=True):
    """Write `rows` (from `rows_for`, any number of logs) to `path` atomically; empty cell = not logged."""
    columns = csv_columns(rows)
    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(column)) for column in columns])
    files.write_atomic(path, text.getvalue(), force)
    return columns
