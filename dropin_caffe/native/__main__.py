"""python3 -m dropin_caffe.native build|path|info: build the native layers, say where they are."""
import argparse
import sys

from . import build, info, path
from ..errors import DropInCaffeError


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python3 -m dropin_caffe.native", description=__doc__.split(":")[0])
    parser.add_argument("command", choices=("build", "path", "info"),
                        help="build: compile unless cached, print the path; path: print where it is or "
                             "will be; info: libcaffe, library, whether built")
    parser.add_argument("--force", action="store_true", help="build: rebuild even if cached")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            print(build(force=args.force))
        elif args.command == "path":
            print(path())
        else:
            for name, value in info().items():
                print("%-9s %s" % (name + ":", value))
    except DropInCaffeError as error:
        print("dropin_caffe.native: %s" % error, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
