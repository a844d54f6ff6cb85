"""Training an experiment's runs on a Dask distributed cluster: one task per run.

The scheduler and the workers are Dask's own (`dask scheduler`, `dask worker ADDRESS`); this
module is the client side. A worker trains a run with the same code as a local run
(`training.execute`: `caffe train` as a subprocess), so the output and data folders must be on a
filesystem every worker sees at the same absolute path; `check_shared` proves it before anything
runs. Each worker takes `runs_per_worker` runs at a time (a Dask worker resource, set on every
worker that joins), each with its host's cores shared among the runs its workers take.

When a worker dies mid-run, the scheduler gives its task to another worker, which resumes the run
from its latest snapshot (the run's lock waits for a dead worker's caffe, which the kernel kills
with it). A chained run's task depends on the task of the run it starts from.
"""
import os
import uuid

import distributed

from ..errors import ConfigError, clip
from . import training

RESOURCE = "dropin-caffe-runs"


class RunSlots(distributed.WorkerPlugin):
    """Gives every worker, present or joining later, `slots` of RESOURCE: the runs it takes at once."""
    name = "dropin-caffe-run-slots"

    def __init__(self, slots):
        self.slots = slots

    async def setup(self, worker):
        await worker.set_resources(**{RESOURCE: self.slots})


class _Relay(training.Events):
    """On a worker: the events of a run, sent to the client as Dask events on `topic`."""

    def __init__(self, topic):
        self.topic, self.last = topic, None

    def _send(self, *event):
        distributed.get_worker().log_event(self.topic, event)

    def update(self, label, iteration):
        if (label, iteration) != self.last:
            self.last = (label, iteration)
            self._send("update", label, iteration)

    def finish(self, label, iterations, verdict):
        self._send("finish", label, iterations, verdict)

    def say(self, text):
        self._send("say", text)


def run_task(task, threads_by_host, topic, *before):
    """A cluster task: train `task` on this worker (after `before`, the task it is chained after,
    finished). Returns (finished, why not)."""
    if before and not before[0][0]:
        return False, ["not started: the run it starts from did not finish"]
    worker = distributed.get_worker()
    host = worker.address.rsplit(":", 1)[0]
    task.threads = task.threads or threads_by_host.get(host)
    relay = _Relay(topic)
    if training.not_started(task, relay):
        return False, []
    return training.execute(task, relay)


def _read_token(path, token):
    try:
        with open(path) as f:
            return f.read() == token
    except OSError:
        return False


class Cluster:
    """A connection to the Dask scheduler at `address`."""

    def __init__(self, address, runs_per_worker=1):
        if runs_per_worker < 1:
            raise ConfigError("--runs-per-worker must be >= 1, got %d" % runs_per_worker)
        try:
            self.client = distributed.Client(address, timeout=30)
        except (OSError, ValueError, TypeError) as error:
            raise ConfigError("cannot reach the Dask scheduler at %s: %s; start one with `dask scheduler` and give "
                              "the address it prints" % (address, clip(str(error)))) from None
        self.address, self.runs_per_worker = address, runs_per_worker
        self.client.register_plugin(RunSlots(runs_per_worker))

    def close(self):
        self.client.close()

    def workers(self):
        return self.client.scheduler_info()["workers"]

    def check_shared(self, folders):
        """Every worker reads back a token written here in each folder, or one line says which cannot."""
        if not self.workers():
            raise ConfigError("the Dask scheduler at %s has no workers; start some with `dask worker %s`"
                              % (self.address, self.address))
        token = uuid.uuid4().hex
        for folder in folders:
            os.makedirs(folder, exist_ok=True)
            path = os.path.join(os.path.abspath(folder), ".dropin-caffe-shared-%s" % token)
            with open(path, "w") as f:
                f.write(token)
            try:
                seen = self.client.run(_read_token, path, token)
            finally:
                os.remove(path)
            blind = sorted(worker for worker, ok in seen.items() if not ok)
            if blind:
                raise ConfigError("worker %s does not see %s at the same path; the output and data folders "
                                  "(-o, --data-dir) must be on a filesystem every worker sees at the same absolute path"
                                  % (blind[0], os.path.abspath(folder)))

    def _threads_by_host(self):
        """{host: BLAS threads a run gets}: the host's cores shared among the runs its workers take."""
        hosts = {}
        for address in self.workers():
            host = address.rsplit(":", 1)[0]
            hosts[host] = hosts.get(host, 0) + self.runs_per_worker
        cores = self.client.run(os.cpu_count)
        return {host: max(1, cores[address] // hosts[host]) for address in cores
                for host in [address.rsplit(":", 1)[0]]}

    def train(self, tasks, after, events):
        """Train `tasks` as tasks of the cluster; `after` maps (configuration, seed) to the
        configuration it starts from. Returns the runs that failed."""
        topic = "dropin-caffe-%s" % (tasks[0].tag if tasks else "none")
        self.client.subscribe_topic(topic, lambda event: getattr(events, event[1][0])(*event[1][1:]))
        threads = self._threads_by_host()
        futures = {}
        for task in tasks:  # in plan order: a chained run's task after the one it depends on
            run = task.run
            before = after[run.configuration, run.seed]
            depends = [futures[before, run.seed]] if (before, run.seed) in futures else []
            futures[run.configuration, run.seed] = self.client.submit(
                run_task, task, threads, topic, *depends, key="run-%s-%s" % (task.tag[:8], uuid.uuid4().hex[:8]),
                resources={RESOURCE: 1}, pure=False)
        failed = []
        try:
            for task, future in zip(tasks, futures.values()):
                try:
                    ok, tail = future.result()
                except Exception as error:  # a worker died too often, or the task raised: that run failed
                    ok, tail = False, ["%s: %s" % (type(error).__name__, clip(str(error)))]
                if not ok and not training.stopped(task.tag):
                    failed.append(task.run)
                    events.say("run %s failed; the end of its log %s:\n  %s"
                               % (task.run.directory, task.run.log, "\n  ".join(tail)))
        except KeyboardInterrupt:  # stop the runs going on (each snapshots), drop the others
            training.stop(tasks[0].tag)
            self.client.cancel(list(futures.values()))
            self.client.run(training.stop, tasks[0].tag)
            raise
        finally:
            self.client.unsubscribe_topic(topic)
        return failed
