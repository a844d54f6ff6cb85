#!/usr/bin/env python3
"""Train an experiment's configurations x seeds with `caffe train`, then plot; see --help."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropin_caffe.cli.run_experiments import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
