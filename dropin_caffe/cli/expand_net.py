"""expand_net: rewrite a Caffe net into its expanded DropIn variant, print its summary, write it.

A thin shell over `dropin_caffe.expand_net`: every flag is one of its keywords.
"""
import argparse
import os
import shlex

from .. import env
from ..netgen import options
from ..netgen.expand import expand_net
from ..netgen.plan import PRESETS
from .common import Parser, assignment, shell

USAGE = """\
examples:
  expand_net.py lenet_train_test.prototxt --replicate conv2=3 --dropin-length 1000 \\
      --solver lenet_solver.prototxt -o out/
  expand_net.py lenet_train_test.prototxt --replicate conv2=3 --no-dropin -o out/   (plain baseline)
  expand_net.py --template alexnet --set train_source=/data/train_lmdb -o out/
  expand_net.py --preset lenet-deep --depth 10 --p-top -o out/
  expand_net.py lenet_train_test.prototxt --widen conv1=40 --widen ip1=1000 --dropin-length 1000 -o out/
presets (ours, after the paper's expanded nets):
%s
"""


def parser():
    presets = "\n".join("  %-13s %s;\n  %13s %s" % (name, p.summary, "", p.source)
                        for name, p in PRESETS.items())
    parser = Parser(
        prog="expand_net.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rewrite a Caffe net into its expanded DropIn variant (Smith, Hand & Doster 2015), "
                    "with a matching solver, and print a summary of every layer.",
        epilog=USAGE % presets)
    parser.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="where to write the files")
    out = add_options(parser)[options.OUTPUT]
    out.add_argument("--draw", metavar="FILE", help="draw the expanded net to a .png or .svg")
    out.add_argument("--force", action="store_true", help="overwrite existing output files")
    out.add_argument("-q", "--quiet", action="store_true", help="print no summary table")
    return parser


def add_options(parser):
    """Add a flag for every expand_net option (`options.OPTIONS`), in its group; the net is positional.
    Returns the argument groups by title."""
    source = parser.add_mutually_exclusive_group(required=True)
    groups = {}
    for option in options.OPTIONS:
        settings = dict(option.cli, help=option.help)
        if option.pairs:
            settings.update(action="append", default=[], type=assignment(*option.pairs))
        if option.keyword == "net":
            source.add_argument("net", **settings)
            continue
        settings["dest"] = option.keyword
        if option.group == options.SOURCE:
            group = source
        else:
            group = groups.get(option.group) or groups.setdefault(option.group, parser.add_argument_group(option.group))
        group.add_argument(*option.flags, **settings)
    return groups


def keywords(args):
    """The `expand_net` keywords of the parsed command line."""
    return {option.keyword: getattr(args, option.keyword) for option in options.OPTIONS}


def _run(argv, out, err):
    os.environ.setdefault("GLOG_minloglevel", "2")  # read when caffe loads: keep its log off the screen
    args = parser().parse_args(argv)
    result = expand_net(**keywords(args))
    written = result.write(args.output_dir, force=args.force, draw=args.draw)
    for note in result.notes:
        print("note: " + note, file=err)
    if not args.quiet:
        print(result.table, file=out)
    for kind, path in written:
        print("wrote %s %s" % (kind, path), file=out)
    command = result.train_command(args.output_dir)
    if result.initial_weights is not None and command:
        hint = "   (a solver cannot name weights; to start the original layers from a trained model too: " \
               "--weights=TRAINED.caffemodel,%s)" % os.path.join(args.output_dir, result.weights_name)
        print("train with: %s%s" % (env.command(shlex.split(command)), "" if args.weights else hint), file=out)
    return 0


def main(argv=None, out=None, err=None):
    """tools/expand_net.py ...: exit code 0, or 2 with one line on stderr and nothing written."""
    return shell("expand_net.py", _run, argv, out, err)
