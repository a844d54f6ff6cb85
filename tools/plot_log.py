#!/usr/bin/env python3
"""Plot Caffe training logs, ours or anyone's: one curve per log, labelled by its file name.

  tools/plot_log.py run1/caffe.log run2/caffe.log -o curves.png [--csv parsed.csv] [--force]

Each curve is the log's test accuracy (else its first test output; logs without a test phase get
a train-loss panel), with DropIn p(t) dashed on a second axis when the log has it. PNG or SVG by
the extension of -o. --csv writes every parsed value: run, iteration, train loss, test outputs, p.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dropin_caffe.plots import plot_log_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(plot_log_main(sys.argv[1:]))
