"""plot_log: plot Caffe training logs, ours or anyone's: one curve per log, labelled by its file name.

Each curve is the log's test accuracy (else its first test output; logs without a test phase get
a train-loss panel), with DropIn p(t) dashed on a second axis when the log has it. PNG or SVG by
the extension of -o. --csv writes every parsed value: run, iteration, train loss, test outputs, p.
"""
import os

from .. import files
from ..errors import ConfigError
from ..experiments.logs import read_log, rows_for, write_csv
from ..experiments.plots import log_labels, main_test_output, palette, plot_accuracy, plot_loss, save_figure
from .common import Parser, shell

FIGURE_EXTENSIONS = (".png", ".svg")


def parser():
    parser = Parser(prog="plot_log.py", allow_abbrev=False,
                     description="Plot Caffe training logs (any caffe train output, ours or not): one curve "
                                 "per log, its test accuracy (else its first test output, else its train loss), "
                                 "with DropIn p(t) dashed on a second axis when the log has it.")
    parser.add_argument("logs", nargs="+", metavar="LOG", help="caffe train logs (glog text, or .gz)")
    parser.add_argument("-o", "--output", required=True, metavar="PLOT", help="the figure, .png or .svg")
    parser.add_argument("--csv", metavar="TABLE", help="also write what was parsed as CSV")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    return parser


def _run(argv, out, err):
    args = parser().parse_args(argv)
    if os.path.splitext(args.output)[1].lower() not in FIGURE_EXTENSIONS:
        raise ConfigError("-o must end in %s, got %s" % (" or ".join(FIGURE_EXTENSIONS), args.output))
    files.check_output(args.output, args.force, "-o")
    if args.csv:
        files.check_output(args.csv, args.force, "--csv")
        if os.path.abspath(args.csv) == os.path.abspath(args.output):
            raise ConfigError("--csv and -o are both %s; give two files" % args.csv)
    twice = sorted({path for path in args.logs if args.logs.count(path) > 1})
    if twice:
        raise ConfigError("log %s is given more than once; give each log once" % twice[0])
    parsed = [read_log(path) for path in args.logs]
    runs = dict(zip(log_labels(args.logs), ([log] for log in parsed)))

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tested = {label: group for label, group in runs.items() if main_test_output(group)}
    untested = {label: group for label, group in runs.items() if label not in tested}
    panels = [kind for kind, group in (("test", tested), ("loss", untested)) if group]
    figure, axes = plt.subplots(len(panels), 1, figsize=(8, 4.2 * len(panels)), squeeze=False)
    try:
        colours = palette(runs)  # a log keeps its colour in both panels
        for ax, kind in zip(axes[:, 0], panels):
            if kind == "test":
                plot_accuracy(ax, tested, colours=colours)
            else:
                plot_loss(ax, untested, colours=colours)
                ax.set_title("logs without a test phase", fontsize="medium")
        figure.tight_layout()
        save_figure(figure, args.output, force=args.force)
    finally:
        plt.close(figure)
    if args.csv:
        write_csv([row for label, log in zip(runs, parsed) for row in rows_for(log, label, label, None)], args.csv,
                  force=args.force)
    print(args.output, file=out)
    if args.csv:
        print(args.csv, file=out)
    return 0


def main(argv=None, out=None, err=None):
    """tools/plot_log.py LOG... -o PLOT.png [--csv TABLE.csv] [--force]; exit code 2 on any error."""
    return shell("plot_log.py", _run, argv, out, err)
