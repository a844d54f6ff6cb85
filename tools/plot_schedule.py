#!/usr/bin/env python3
"""Draw the gradual DropIn schedule p(t) = min(1, max(0, (t - start) / L)) to a PNG or SVG.

  tools/plot_schedule.py -o docs/schedule.png [--length 1000] [--stagger 500 --layers 3]

Dots: the fraction of 10,000 units that a real mask draw took from `new` at that iteration.
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-o", "--output", required=True, help="PNG or SVG file to write")
    parser.add_argument("--length", type=int, default=1000, help="DropIn length L in iterations")
    parser.add_argument("--layers", type=int, default=3, help="how many DropIn layers")
    parser.add_argument("--stagger", type=int, default=500, help="iterations between layers' starts")
    parser.add_argument("--force", action="store_true", help="overwrite an existing output file")
    args = parser.parse_args(argv)
    if args.length < 1 or args.layers < 1 or args.stagger < 0:
        print("plot_schedule.py: --length and --layers must be >= 1 and --stagger >= 0", file=sys.stderr)
        return 2
    if os.path.exists(args.output) and not args.force:
        print("plot_schedule.py: %s exists; pass --force to overwrite it" % args.output, file=sys.stderr)
        return 2
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from dropin_caffe.plots import plot_schedule, save_figure

    figure, ax = plt.subplots(figsize=(7, 3.6))
    plot_schedule(ax, args.length, [i * args.stagger for i in range(args.layers)], measured_units=10000)
    ax.set_title("Gradual DropIn, L = %d" % args.length)
    figure.tight_layout()
    save_figure(figure, args.output)
    print(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
