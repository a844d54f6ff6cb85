"""Plots drawn on an Axes the caller gives (the CLIs save files; tests use the Agg backend).

- `plot_schedule`: the gradual DropIn schedule p(t) itself.
- Experiment plots from Caffe logs (`logs.Log`): `plot_accuracy`, `plot_loss`, `plot_final_bars`
  and the table `markdown_summary`. They take `runs`, an ordered mapping
  {configuration label: [Log, one per seed]}; its order gives colours, legend and bar order.
  Over seeds they show the mean and the min-max range (no error model: seeds are few). The
  plots take `colours`, an optional {configuration: colour}, so that several figures agree;
  by default configuration i gets matplotlib's "Ci".
- `log_labels` and `save_figure` (atomic) for whoever saves the figures.

Importing this module does not import matplotlib; the command lines pick the Agg backend.
"""
import math
import os
import re
import textwrap

import numpy as np

from .. import files, kernels
from ..errors import ConfigError


def plot_schedule(ax, length, starts=(0,), iterations=None, measured_units=0, seed=0):
    """Draw p(t) of gradual DropIn layers that start entering at `starts`, each over `length`.

    With `measured_units`, also mark at a few iterations the fraction of units that a real
    `sample_mask` draw took from `new` (the schedule as the layer actually applies it).
    """
    iterations = iterations or max(starts) + int(1.25 * length)
    t = np.arange(iterations + 1)
    rng = np.random.default_rng(seed)
    for start in starts:
        p = [kernels.schedule_p_new(i, length, start) for i in t]
        line, = ax.plot(t, p, label="DropIn layer entering at %d" % start if len(starts) > 1 else "p(t)")
        if measured_units:
            at = np.linspace(0, iterations, 17).astype(int)
            drawn = [np.mean(kernels.sample_mask(rng, kernels.schedule_p_new(i, length, start),
                                                 (measured_units,)) != 0) for i in at]
            ax.plot(at, drawn, "o", color=line.get_color(), markersize=4)
    ax.set_xlabel("training iteration t")
    ax.set_ylabel("p(t) = P(unit from new)")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(alpha=0.3)
    _legend_below(ax, ax.get_legend_handles_labels()[0])
    return ax


def _legend_below(ax, handles):
    """The legend under the x axis's label, where it covers no curve (inside the axes it did: curves
    fill every corner); the figure's tight_layout makes room for it. The gap is in font sizes, so it
    clears the tick labels and the label on small axes as on large ones."""
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0), borderaxespad=4.5,
              ncol=min(2, len(handles)), fontsize="small", frameon=False)


# Experiment plots: `runs` = {configuration label: [logs.Log per seed]} (see the module docstring).
# A configuration whose logs have no test outputs is left out of the accuracy plots.

LOWER_IS_BETTER = ("loss", "error")


def palette(runs, colours=None):
    """{configuration: colour}: from `colours` where given, else matplotlib's cycle C0..C9 by position."""
    colours = colours or {}
    return {name: colours.get(name, "C%d" % (index % 10)) for index, name in enumerate(runs)}


def _seeds_label(configuration, logs):
    return configuration if len(logs) == 1 else "%s (%d seeds)" % (configuration, len(logs))


def main_test_output(logs):
    """(test net, name) to plot for these logs: "accuracy" if any test net has it, else the first
    output whose name contains "acc", else the first test output that is not a DropIn p; or None."""
    keys = []
    for log in logs:
        dropins = set(log.dropin_names)
        keys.extend(key for key in log.test_outputs() if key[1] not in dropins and key not in keys)
    keys.sort(key=lambda key: key[0])
    for rule in (lambda name: name == "accuracy", lambda name: "acc" in name.lower(), lambda name: True):
        for key in keys:
            if rule(key[1]):
                return key
    return None


def _output_key(output, logs):
    """`output` as (net, name): None picks main_test_output, "test1/top5" is net 1, "top5" net 0."""
    if output is None:
        return main_test_output(logs)
    if isinstance(output, tuple):
        return output
    head, sep, name = output.partition("/")
    if sep and head.startswith("test") and head[4:].isdigit():
        return int(head[4:]), name
    return 0, output


def _band(series_list):
    """(iterations, mean, min, max) over the series ({iteration: value}), finite values only."""
    values = {}
    for series in series_list:
        for iteration, value in series.items():
            if math.isfinite(value):
                values.setdefault(iteration, []).append(value)
    iterations = np.array(sorted(values), dtype=float)
    stacked = [values[int(i)] for i in iterations]
    return (iterations, np.array([np.mean(v) for v in stacked]), np.array([min(v) for v in stacked]),
            np.array([max(v) for v in stacked]))


def _draw_band(ax, series_list, colour, label, linestyle="-", band=True):
    iterations, mean, low, high = _band(series_list)
    if not len(iterations):
        return None
    marker = "o" if len(iterations) <= 40 and linestyle == "-" else None  # sparse tests: show the points
    line, = ax.plot(iterations, mean, linestyle, color=colour, label=label, marker=marker, markersize=3,
                    linewidth=1.6 if linestyle == "-" else 1.2)
    if band and len([s for s in series_list if s]) > 1:
        ax.fill_between(iterations, low, high, color=colour, alpha=0.2, linewidth=0)
    return line


def _iteration_axis(ax):
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("iteration")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _test_series(logs, key):
    return [log.test_outputs().get(key, {}) for log in logs]


def _few(names, count):
    """`count` of `names` spread evenly in their natural order (conv2_2 before conv2_10), the first and
    the last included; all of them when `count` is None."""
    names = sorted(names, key=lambda name: [int(part) if part.isdigit() else part
                                            for part in re.split(r"(\d+)", name)])
    if count is None or len(names) <= count:
        return names
    return [names[int(i)] for i in np.unique(np.linspace(0, len(names) - 1, count).round())]


def plot_accuracy(ax, runs, output=None, show_p=True, colours=None, p_layers=None):
    """Test accuracy (or `output`, e.g. "test1/accuracy") vs iteration: per configuration its mean
    over seeds and a min-max band, and, dashed on a twin axis, the p(t) its DropIn layers logged
    (of `p_layers` of them, spread evenly from the first to the last, when given; labelled).

    Returns the twin Axes holding p(t) (and the legend), or None when no configuration logged a
    DropIn p (the legend is then on `ax`).
    """
    names, handles, p_series = set(), [], []
    colour_of = palette(runs, colours)
    for configuration, logs in runs.items():
        key = _output_key(output, logs)
        if key is not None:
            line = _draw_band(ax, _test_series(logs, key), colour_of[configuration],
                              _seeds_label(configuration, logs))
            if line is not None:
                names.add(key[1])
                handles.append(line)
        if show_p:
            tables = [log.dropin_p() for log in logs]
            for name in _few(dict.fromkeys(name for table in tables for name in table), p_layers):
                p_series.append((colour_of[configuration], [table.get(name, {}) for table in tables], name))
    if not handles:
        raise ConfigError("no test output %sin any log of %s; plot the train loss instead (plot_loss)"
                          % ("%r " % output if output else "", ", ".join(runs) or "no configuration"))
    _iteration_axis(ax)
    ax.set_ylabel("test %s" % names.pop() if len(names) == 1 else "test output")
    ax.grid(alpha=0.3)
    twin = None
    if p_series:
        from matplotlib.lines import Line2D

        twin = ax.twinx()
        named = set()
        for colour, series, name in p_series:
            line = _draw_band(twin, series, colour, None, linestyle="--", band=False)
            if p_layers is not None and line is not None and name not in named:  # few: named where it enters
                named.add(name)
                x, y = line.get_data()
                entered = int(np.argmax(np.asarray(y) >= 0.5))
                twin.annotate(name, (x[entered], 0.5), rotation=90, va="center", ha="right", fontsize="x-small",
                              color="dimgrey")
        twin.set_ylim(-0.03, 1.03)
        twin.set_ylabel("DropIn p(t), dashed")
        handles.append(Line2D([], [], color="grey", linestyle="--", label="DropIn p(t), right axis"))
    _legend_below(twin or ax, handles)  # the twin is drawn on top
    return twin


def plot_loss(ax, runs, colours=None):
    """The solver's train loss vs iteration on a log scale: per configuration the mean over seeds
    and a min-max band (values <= 0 or not finite are left out)."""
    drawn, colour_of = [], palette(runs, colours)
    for configuration, logs in runs.items():
        series = [{i: v for i, v in log.train_loss.items() if v > 0} for log in logs]
        if _draw_band(ax, series, colour_of[configuration], _seeds_label(configuration, logs)) is not None:
            drawn.extend(v for one in series for v in one.values())
    if not drawn:
        raise ConfigError("no positive train loss in any log of %s; check that they are caffe train logs"
                          % (", ".join(runs) or "no configuration"))
    ax.set_yscale("log")
    if max(drawn) < 10 * min(drawn):  # under a decade: label the ticks 1.5, 2, not 2x10^0
        from matplotlib.ticker import FormatStrFormatter

        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    _iteration_axis(ax)
    ax.set_ylabel("train loss (solver's smoothed loss)")
    ax.grid(alpha=0.3, which="both")
    _legend_below(ax, ax.get_legend_handles_labels()[0])
    return ax


def _final(series):
    """The value of the last test, or None when it is missing or not finite (a diverged net's)."""
    return series[max(series)] if series and math.isfinite(series[max(series)]) else None


def _best(series, key):
    finite = [v for v in series.values() if math.isfinite(v)]
    lower = any(word in key[1].lower() for word in LOWER_IS_BETTER)
    return (min(finite) if lower else max(finite)) if finite else None


def _finals(logs, key):
    """The last test value of each log whose last test value is finite."""
    return [f for f in (_final(series) for series in _test_series(logs, key)) if f is not None]


def plot_final_bars(ax, runs, output=None, colours=None):
    """Final test accuracy (or `output`) per configuration: a bar at the mean over seeds, a
    min-max error bar and a dot per seed."""
    labels, names, colour_of = [], set(), palette(runs, colours)
    for configuration, logs in runs.items():
        key = _output_key(output, logs)
        finals = _finals(logs, key) if key else []
        if not finals:
            continue
        names.add(key[1])
        x, mean = len(labels), float(np.mean(finals))
        ax.bar(x, mean, width=0.6, color=colour_of[configuration], alpha=0.75)
        ax.errorbar([x], [mean], yerr=[[mean - min(finals)], [max(finals) - mean]], fmt="none",
                    ecolor="black", capsize=5, linewidth=1)
        ax.scatter(x + np.linspace(-0.15, 0.15, len(finals)) if len(finals) > 1 else [x], finals,
                   color="black", s=14, zorder=3)
        ax.annotate("%.4g" % mean, (x, max(finals)), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize="small")
        label = textwrap.fill(configuration, 13)  # long names side by side must not run into each other
        labels.append("%s\n(%d seeds)" % (label, len(finals)) if len(finals) > 1 else label)
    if not labels:
        raise ConfigError("no test output %sin any log of %s; nothing to compare"
                          % ("%r " % output if output else "", ", ".join(runs) or "no configuration"))
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels)
    ax.set_ylabel("final test %s" % names.pop() if len(names) == 1 else "final test output")
    ax.margins(y=0.12)
    ax.grid(alpha=0.3, axis="y")
    return ax


def _spread(values):
    if not values:
        return "—"
    return "%s [%s, %s]" % (_number(np.mean(values)), _number(min(values)), _number(max(values)))


def _number(value):
    return "%.4f" % value if abs(value) < 10 else "%.1f" % value


def markdown_summary(runs, output=None):
    """A Markdown table: per configuration the seeds, the final and the best test accuracy (or
    `output`) and how far each run ended from its best (the late degradation), as mean [min, max]
    over seeds, the last iteration and the iterations/second."""
    keys = {configuration: _output_key(output, logs) for configuration, logs in runs.items()}
    names = {key[1] for key in keys.values() if key}
    name = names.pop() if len(names) == 1 else "test output"
    lines = ["| configuration | seeds | final %s: mean [min, max] | best %s: mean [min, max] "
             "| best - final | last iteration | iterations/s |" % (name, name),
             "|---|---:|---|---|---|---:|---:|"]
    for configuration, logs in runs.items():
        key = keys[configuration]
        unfinished, diverged = sum(not log.finished for log in logs), sum(log.diverged for log in logs)
        seeds = "%d" % len(logs) + "".join(" (%d %s)" % (count, word) for count, word in
                                           ((unfinished, "unfinished"), (diverged, "diverged")) if count)
        lasts = sorted({log.last_iteration for log in logs if log.last_iteration is not None})
        last = "—" if not lasts else "%d" % lasts[0] if len(lasts) == 1 else "%d–%d" % (lasts[0], lasts[-1])
        speeds = [log.iterations_per_second for log in logs if log.iterations_per_second]
        speed = "—" if not speeds else "%.3g" % np.mean(speeds) if np.mean(speeds) < 100 else "%.0f" % np.mean(speeds)
        pairs = [(_final(series), _best(series, key)) for series in _test_series(logs, key)] if key else []
        finals, bests = ([v for v in values if v is not None] for values in zip(*pairs)) if pairs else ([], [])
        lines.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            configuration.replace("|", "\\|"), seeds, _spread(finals), _spread(bests),
            _spread([abs(b - f) for f, b in pairs if f is not None]), last, speed))
    return "\n".join(lines) + "\n"


# tools/plot_log.py

FIGURE_EXTENSIONS = (".png", ".svg")


def log_labels(paths):
    """Short unique labels: file names, with as many parent directories as it takes to tell them apart."""
    parts = [os.path.normpath(path).split(os.sep) for path in paths]
    for depth in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-depth:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return list(paths)


def save_figure(figure, path, dpi=110, force=True):
    """Save atomically: a reader never sees half a file, and a failure leaves no partial file."""
    files.write_atomic(path, lambda partial: figure.savefig(partial, dpi=dpi), force)
