"""python3 -m dropin_caffe.native build|path|info (the command lives in dropin_caffe.cli.native)."""
import sys

from ..cli.native import main

if __name__ == "__main__":
    sys.exit(main())
