"""export_net: write the stock-Caffe equivalent of a trained DropIn net, proven output for output.

A thin shell over `dropin_caffe.export_net`: every flag is one of its keywords.
"""
import argparse
import os

from ..netgen import export as exporting
from .common import Parser, assignment, invoked_as, shape, shell

PROG = "export_net.py"
USAGE = """\
examples:
  export_net.py lenet_deep_dropin.prototxt snap/lenet_deep_dropin_iter_300.caffemodel -o out/
  export_net.py net.prototxt net.caffemodel -o out/ --train-val --solver solver_dropin.prototxt
writes OUT_DIR/<net stem>_deploy.prototxt and .caffemodel (--train-val: <net stem>_stock.*, and
<solver stem>_stock.prototxt). Exit codes: 0 written, 1 the export's outputs differ from the
original's (nothing written), 2 bad input (nothing written).
"""


def parser():
    parser = Parser(
        prog=PROG, allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write the stock-Caffe equivalent of a trained DropIn net (no Python layers): each DropIn at "
                    "its snapshot's p becomes its new or prev input or an Eltwise blend, each Resize fixed "
                    "linear layers; both nets are run in Caffe and their outputs compared.",
        epilog=USAGE)
    parser.add_argument("net", help="the DropIn net prototxt, as trained")
    parser.add_argument("weights", help="its .caffemodel (a snapshot of that training)")
    parser.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="where to write the files")
    parser.add_argument("--batch", type=int, default=1, metavar="N", help="the deploy Input layers' batch (1)")
    parser.add_argument("--input-shape", action="append", default=[], metavar="BLOB=C,H,W",
                        type=assignment(shape, "BLOB=C,H,W (or N,C,H,W) with integers"),
                        help="shape of a data layer's top whose shape lives in its database")
    parser.add_argument("--train-val", action="store_true", help="keep data, losses and both phases, to train on "
                                                                 "in a Caffe without Python layers")
    parser.add_argument("--allow-blend", action="store_true", help="--train-val even where a DropIn is at "
                                                                   "0 < p < 1 (it becomes a fixed blend)")
    parser.add_argument("--solver", metavar="SOLVER", help="with --train-val: write a solver pointing at the export")
    parser.add_argument("--no-validate", action="store_true", help="skip running both nets in Caffe")
    parser.add_argument("--force", action="store_true", help="overwrite existing output files")
    return parser


def _run(argv, out, err):
    os.environ.setdefault("GLOG_minloglevel", "2")  # read when caffe loads: keep its log off the screen
    args = parser().parse_args(argv)
    result = exporting.export_net(args.net, args.weights, batch=args.batch, input_shape=dict(args.input_shape),
                        train_val=args.train_val, allow_blend=args.allow_blend, solver=args.solver,
                        validate=not args.no_validate)
    for line in result.lines:
        print(line, file=out)
    for blob, largest, relative in result.proof:
        print("output '%s': max |export - original| = %.3g, relative %.3g" % (blob, largest, relative), file=out)
    failed = result.failures
    if failed:
        blob, _, relative = failed[0]
        print("%s: the export's output '%s' differs from the original's by %.3g relative (> %g, float32 "
              "rounding); nothing written. Please report this net." % (invoked_as(PROG), blob, relative,
                                                                      exporting.TOLERANCE),
              file=err)
        return 1
    for kind, path in result.write(args.output_dir, force=args.force):
        print("wrote %s %s" % (kind, path), file=out)
    return 0


def main(argv=None, out=None, err=None):
    """tools/export_net.py ...: exit code 0, 1 when the proof fails, or 2 with one line on stderr."""
    return shell(PROG, _run, argv, out, err)
