"""Solvers for expanded nets: the user's (or a template's) solver pointed at the new net.

Everything else in the solver is kept: the expanded net should train exactly as the original.
"""
import os

from ..errors import ConfigError
from .prototxt import Enum

NET_FIELDS = ("net", "net_param", "train_net", "train_net_param", "test_net", "test_net_param")


def iter_size(solver):
    """Forward passes per solver iteration (DropIn layers count iterations, not passes)."""
    value = solver.get("iter_size", 1) if solver is not None else 1
    if not isinstance(value, int) or value < 1:
        raise ConfigError("solver: iter_size must be an integer >= 1, got %r" % (value,))
    return value


def expanded_solver(solver, net_path, suffix, max_iter=None, solver_mode=None):
    """A copy of `solver` training `net_path`, snapshotting to `<its prefix>_<suffix>`.

    The new snapshot_prefix differs from the original's, so the expanded net's snapshots can never
    overwrite the original net's.
    """
    if "train_net" in solver or "test_net" in solver or "train_net_param" in solver:
        raise ConfigError("solver: separate train_net/test_net fields are not supported; use one `net:` "
                          "holding both phases")
    expanded = solver.copy()
    position = next((i for i, field in enumerate(expanded.fields) if field[0] in NET_FIELDS), 0)
    for name in NET_FIELDS:
        expanded.remove(name)
    expanded.insert(position, "net", net_path)
    prefix = solver.get("snapshot_prefix", "snapshot")
    expanded.set("snapshot_prefix", "%s_%s" % (prefix, suffix) if suffix else prefix)
    if max_iter is not None:
        if not isinstance(max_iter, int) or max_iter < 1:
            raise ConfigError("--max-iter must be an integer >= 1, got %r" % (max_iter,))
        expanded.set("max_iter", max_iter)
    if solver_mode is not None:
        expanded.set("solver_mode", Enum(solver_mode))
    return expanded


def snapshot_note(solver):
    """A note when the folder of `solver`'s snapshot_prefix does not exist, else None: `caffe train`
    would stop with "Cannot write to snapshot prefix". A relative prefix resolves against the folder
    `caffe train` runs in, taken to be the current one."""
    folder = os.path.dirname(str(solver.get("snapshot_prefix", "")))
    if not folder or os.path.isdir(folder):
        return None
    where = "" if os.path.isabs(folder) else " (relative to the folder `caffe train` runs in; from here %s)" \
        % os.path.abspath(folder)
    return ("the solver's snapshot_prefix is in folder %s%s, which does not exist: `caffe train` would stop with "
            "\"Cannot write to snapshot prefix\"; create it (mkdir -p %s) or change snapshot_prefix"
            % (folder, where, folder))
