#!/usr/bin/env python3
"""Draw the gradual DropIn schedule p(t) to a PNG or SVG; see `plot_schedule.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropin_caffe.cli.plot_schedule import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
