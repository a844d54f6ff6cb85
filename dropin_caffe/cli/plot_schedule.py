"""plot_schedule: draw the gradual DropIn schedule p(t) = min(1, max(0, (t - start) / L)).

Dots: the fraction of 10,000 units that a real mask draw took from `new` at that iteration.
"""
from .. import files
from ..errors import ConfigError
from .common import Parser, shell


def parser():
    p = Parser(prog="plot_schedule.py", description=__doc__.split("\n")[0])
    p.add_argument("-o", "--output", required=True, help="PNG or SVG file to write")
    p.add_argument("--length", type=int, default=1000, help="DropIn length L in iterations")
    p.add_argument("--layers", type=int, default=3, help="how many DropIn layers")
    p.add_argument("--stagger", type=int, default=500, help="iterations between layers' starts")
    p.add_argument("--force", action="store_true", help="overwrite an existing output file")
    return p


def _run(argv, out, err):
    args = parser().parse_args(argv)
    if args.length < 1 or args.layers < 1 or args.stagger < 0:
        raise ConfigError("--length and --layers must be >= 1 and --stagger >= 0")
    files.check_output(args.output, args.force, "-o")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..experiments.plots import plot_schedule, save_figure

    figure, ax = plt.subplots(figsize=(7, 3.6))
    plot_schedule(ax, args.length, [i * args.stagger for i in range(args.layers)], measured_units=10000)
    ax.set_title("Gradual DropIn, L = %d" % args.length)
    figure.tight_layout()
    save_figure(figure, args.output, force=args.force)
    print(args.output, file=out)
    return 0


def main(argv=None, out=None, err=None):
    """tools/plot_schedule.py -o FILE [--length L] [--layers N] [--stagger S]; 2 on bad input."""
    return shell("plot_schedule.py", _run, argv, out, err)
