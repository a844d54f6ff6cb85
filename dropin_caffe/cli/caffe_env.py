"""Build, inspect and run commands in the Caffe that dropin_caffe uses.

  caffe-env create [--force]   build the embedded Caffe (Debian bullseye) unless present
  caffe-env run CMD [ARGS...]  run CMD with Caffe, the repo on PYTHONPATH, and wait for it:
                               its exit code; SIGINT, SIGTERM and SIGHUP go on to CMD
  caffe-env info               which Caffe is in use: path, version, BLAS, Python

A machine whose python3 already imports caffe uses that Caffe and builds nothing.
Environment: DROPIN_CAFFE_HOME (where the root is kept, default ~/.cache/dropin-caffe),
DROPIN_CAFFE_MIRROR (Debian mirror), DROPIN_CAFFE_BIND (more paths to see inside, ':'-separated),
DROPIN_CAFFE_EMBEDDED=1 (use the embedded Caffe even where python3 imports one).
"""
import argparse
import sys

from .. import env
from ..errors import DropInCaffeError

# Stdlib only: this runs on the host's Python, which may have neither numpy nor Caffe.


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="caffe-env", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="build the embedded Caffe unless present")
    create.add_argument("--force", action="store_true", help="rebuild even if a complete one exists")
    run = commands.add_parser("run", help="run a command with Caffe")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD [ARGS...]")
    commands.add_parser("info", help="say which Caffe is in use")
    args = parser.parse_args(argv)
    log = lambda line: print(line, file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.command == "create":
            if env.uses_own_caffe() and not args.force:
                log("caffe-env: this machine's python3 imports caffe; nothing to build")
            else:
                print(env.create(force=args.force, log=log))
            return 0
        if args.command == "run" and not args.argv:
            parser.error("run needs a command, e.g. tools/caffe-env run python3 -m pytest tests")
        argv = args.argv if args.command == "run" else ["python3", "-c", env.INFO_SCRIPT]
        if args.command == "info":
            command, _ = env.command_line(argv, log=log)
            print("in use:  %s" % ("embedded, " + env.root() if command[0] == "bwrap" else "this machine's own"))
        sys.stdout.flush()
        return env.run(argv, log=log)
    except DropInCaffeError as error:
        print("caffe-env: %s" % error, file=sys.stderr)
        return 2
    except OSError as error:
        print("caffe-env: cannot run %s: %s" % (error.filename or argv[0], error.strerror), file=sys.stderr)
        return 127
