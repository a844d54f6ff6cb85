#!/usr/bin/env python3
"""Rewrite a Caffe net into its expanded DropIn variant; see `expand_net.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropin_caffe.cli.expand_net import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
