#!/usr/bin/env python3
"""Plot Caffe training logs, ours or anyone's; see `plot_log.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropin_caffe.cli.plot_log import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
