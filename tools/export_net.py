#!/usr/bin/env python3
"""Write the stock-Caffe equivalent of a trained DropIn net; see `export_net.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropin_caffe.cli.export_net import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
