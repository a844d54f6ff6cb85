"""An experiment's results: every run's log parsed into results.csv, the plots, summary.md."""
import os
import textwrap

from .. import files
from ..errors import ConfigError
from . import logs, plots


def _offset(experiment, run):
    return experiment.stage(run.configuration).offset if run.configuration in experiment.configurations else 0


def _panels(plt, experiment, grouped):
    """Accuracy (with the p of 3 DropIn layers) over train loss, one column per panel; a configuration
    keeps its colour in every column."""
    columns = [(prefix, {short: grouped[name] for short, name in experiment.panel(prefix).items()
                         if name in grouped}) for prefix in experiment.panels]
    columns = [(prefix, runs) for prefix, runs in columns if runs]
    colours = plots.palette(dict.fromkeys(short for _, runs in columns for short in runs))
    figure, axes = plt.subplots(2, len(columns), figsize=(6.5 * len(columns), 11), squeeze=False)
    for (prefix, runs), (top, bottom) in zip(columns, axes.T):
        plots.plot_accuracy(top, runs, colours=colours, p_layers=3)
        top.set_title(prefix)
        plots.plot_loss(bottom, runs, colours=colours)
    return figure


def report(experiment, runs, out_dir):
    """Write results.csv, the plots (PNG and SVG) and summary.md; return (summary text, plot path)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # A chained run's curves start where the chain before it ended: the x axis counts every iteration.
    finished = [(run, logs.read_log(run.log).shift(_offset(experiment, run))) for run in runs if run.finished]
    if not finished:
        raise ConfigError("no run of %s has finished; nothing to report" % experiment.name)
    grouped, rows = {}, []  # {configuration: [Log per seed]} in the experiment's order; CSV rows
    for run, log in finished:
        grouped.setdefault(run.configuration, []).append(log)
        rows += logs.rows_for(log, os.path.relpath(run.directory, out_dir), run.configuration, run.seed)
    logs.write_csv(rows, os.path.join(out_dir, "results.csv"))
    if experiment.panels:
        figure = _panels(plt, experiment, grouped)
    else:
        figure, axes = plt.subplots(1, 3, figsize=(19, 5.6), gridspec_kw={"width_ratios": [2.2, 1.5, 1.5]})
        plots.plot_accuracy(axes[0], grouped)
        plots.plot_loss(axes[1], grouped)
        plots.plot_final_bars(axes[2], grouped)
    title = "%s: %s" % (experiment.name, experiment.description)
    figure.suptitle(textwrap.fill(title, int(10 * figure.get_figwidth())), fontsize=10)  # ~10 characters an inch
    figure.tight_layout()
    picture = os.path.join(out_dir, "%s.png" % experiment.name)
    for path in (picture, os.path.splitext(picture)[0] + ".svg"):
        plots.save_figure(figure, path)
    plt.close(figure)
    summary = plots.markdown_summary(grouped)
    files.write_atomic(os.path.join(out_dir, "summary.md"),
                       "# %s\n\n%s\n\n%s\n" % (experiment.name, experiment.description, summary), force=True)
    return summary, picture
