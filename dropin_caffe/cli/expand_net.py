"""expand_net: rewrite a Caffe net into its expanded DropIn variant, print its summary, write it.

A thin shell over `dropin_caffe.expand_net`: every flag is one of its keywords.
"""
import argparse
import os
import shlex

from .. import env
from ..netgen.expand import expand_net
from ..netgen.plan import PRESETS
from .common import Parser, assignment, shape, shell

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
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("net", nargs="?", help="the net prototxt (current or old V1 format)")
    source.add_argument("--template", metavar="NAME", help="a built-in stock net: lenet, cifar10_quick, "
                        "cifar10_full, alexnet, vgg11, vgg16")
    source.add_argument("--preset", metavar="NAME", choices=sorted(PRESETS),
                        help="one of our presets after the paper's expanded nets: %s" % ", ".join(PRESETS))
    parser.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="where to write the files")
    rewrite = parser.add_argument_group("rewrites")
    rewrite.add_argument("--replicate", action="append", default=[], metavar="LAYER=K",
                         type=assignment(int, "LAYER=K with an integer K"),
                         help="insert K replicas of LAYER after it, each entering by gradual DropIn")
    rewrite.add_argument("--regularize", action="append", default=[], metavar="LAYER=P[:BLOB]",
                         type=assignment(_p_and_prev, "LAYER=P or LAYER=P:BLOB with a number P"),
                         help="replace Dropout LAYER by a regularizing DropIn taking units from new with "
                              "probability P, else from prev: BLOB, or by default the nearest blob before "
                              "LAYER's input that every path from the inputs passes through")
    rewrite.add_argument("--widen", action="append", default=[], metavar="LAYER=C2",
                         type=assignment(int, "LAYER=C2 with an integer C2"),
                         help="grow conv or fc LAYER to C2 outputs: an extra layer computes the new units, which "
                              "enter by gradual DropIn while LAYER's own stay unchanged; LAYER's consumers get "
                              "C2 inputs")
    rewrite.add_argument("--dropin-length", type=int, metavar="L", help="iterations for a new layer to enter; "
                         "required with --replicate and --widen unless --no-dropin")
    rewrite.add_argument("--stagger", type=int, metavar="S", help="DropIn layer i starts entering at i*S")
    rewrite.add_argument("--length-growth", type=float, metavar="G", help="tailored lengths: DropIn layer i gets "
                         "length round(L * G**i) (default 1: all L)")
    rewrite.add_argument("--no-dropin", action="store_true", help="the plain expanded baseline: same replicas, "
                                                                  "no DropIn")
    rewrite.add_argument("--dropin-train", choices=["select", "blend"],
                         help="how gradual DropIn layers train: select (default, each unit drawn from new with "
                              "probability p) or blend (p new + (1 - p) prev, a deterministic fade-in; our addition)")
    rewrite.add_argument("--p-top", action="store_true", help="DropIn layers output p so Caffe's log shows it")
    rewrite.add_argument("--add-activation", choices=["relu"], help="give replicas a ReLU where the original "
                                                                    "has no activation")
    rewrite.add_argument("--replica-kernel", type=int, metavar="K", help="kernel size of conv replicas (odd)")
    rewrite.add_argument("--native", action="store_true", help="emit the native C++ layer types (DropIn, "
                         "DropInResize; built on first use, see README) instead of Python layers")
    rewrite.add_argument("--replica-init", choices=["identity"],
                         help="identity: each replica starts as the identity map (centre tap 1 on its own channel, "
                              "bias 0), written as NET_init.caffemodel for caffe train --weights")
    rewrite.add_argument("--replica-std", type=float, metavar="STD", help="replicas' weights from gaussian(STD)")
    rewrite.add_argument("--depth", type=int, metavar="N", help="lenet-deep: how many conv layers to add")
    rewrite.add_argument("--width", type=int, metavar="C", help="lenet-deep: channels of conv2 and the added "
                         "layers (default 50)")
    rewrite.add_argument("--input-shape", action="append", default=[], metavar="BLOB=C,H,W",
                         type=assignment(shape, "BLOB=C,H,W (or N,C,H,W) with integers"),
                         help="shape of a data layer's top (C,H,W: one image, the batch is the layer's own, "
                              "else 1) whose shape lives in its database, of a Python or fork data layer's, or "
                              "of an unknown layer's; it replaces an Input layer's declared shape")
    out = parser.add_argument_group("solver and output")
    out.add_argument("--solver", metavar="SOLVER", help="the original solver prototxt; emits the matching one")
    out.add_argument("--max-iter", type=int, help="the emitted solver's max_iter")
    out.add_argument("--solver-mode", choices=["CPU", "GPU"], help="the emitted solver's solver_mode")
    out.add_argument("--set", action="append", default=[], metavar="VAR=VALUE", dest="variables",
                     type=assignment(str, "VAR=VALUE"), help="a template variable (data source, batch size, ...)")
    out.add_argument("--draw", metavar="FILE", help="draw the expanded net to a .png or .svg")
    out.add_argument("--no-validate", action="store_true", help="skip the caffe_pb2 and caffe.Net checks")
    out.add_argument("--force", action="store_true", help="overwrite existing output files")
    out.add_argument("-q", "--quiet", action="store_true", help="print no summary table")
    return parser


def _p_and_prev(text):
    """P, or (P, BLOB) for P:BLOB."""
    p_new, sep, prev = text.partition(":")
    if sep and not prev:
        raise ValueError(text)
    return (float(p_new), prev) if sep else float(p_new)


def keywords(args):
    """The `expand_net` keywords of the parsed command line."""
    return dict(
        net=args.net, template=args.template, preset=args.preset, replicate=args.replicate,
        regularize=args.regularize, widen=args.widen, dropin_length=args.dropin_length, stagger=args.stagger,
        length_growth=args.length_growth, dropin=not args.no_dropin, p_top=args.p_top,
        add_activation=args.add_activation, replica_kernel=args.replica_kernel, replica_std=args.replica_std,
        depth=args.depth, width=args.width, input_shape=dict(args.input_shape), solver=args.solver, max_iter=args.max_iter,
        solver_mode=args.solver_mode, settings=dict(args.variables), validate=not args.no_validate,
        native=args.native, dropin_train=args.dropin_train, replica_init=args.replica_init)


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
        weights = os.path.join(args.output_dir, result.weights_name)
        print("train with: %s   (a solver cannot name weights; to start the original layers from a trained "
              "model too: --weights=TRAINED.caffemodel,%s)" % (env.command(shlex.split(command)), weights), file=out)
    return 0


def main(argv=None, out=None, err=None):
    """tools/expand_net.py ...: exit code 0, or 2 with one line on stderr and nothing written."""
    return shell("expand_net.py", _run, argv, out, err)
