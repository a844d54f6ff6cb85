#!/usr/bin/env python3
"""Write MNIST, Fashion-MNIST or CIFAR-10 into the LMDBs Caffe's stock nets read; see `make_dataset.py --help`."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from dropin_caffe.cli.make_dataset import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
