"""python3 -m dropin_caffe.native build|path|info: build the native layers, say where they are."""
from ..native import build, info, path
from .common import Parser, shell


def parser():
    p = Parser(prog="python3 -m dropin_caffe.native", description=__doc__.split(":")[0])
    p.add_argument("command", choices=("build", "path", "info"),
                   help="build: compile unless cached, print the path; path: print where it is or will be; "
                        "info: libcaffe, library, whether built")
    p.add_argument("--force", action="store_true", help="build: rebuild even if cached")
    return p


def _run(argv, out, err):
    args = parser().parse_args(argv)
    if args.command == "build":
        print(build(force=args.force), file=out)
    elif args.command == "path":
        print(path(), file=out)
    else:
        for name, value in info().items():
            print("%-9s %s" % (name + ":", value), file=out)
    return 0


def main(argv=None, out=None, err=None):
    return shell("dropin_caffe.native", _run, argv, out, err)
