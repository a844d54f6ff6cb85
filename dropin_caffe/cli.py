"""Command-line mains. Each is `main(argv) -> exit code`; library errors become one line on stderr
and exit code 2, and nothing is written unless everything checked out."""
import argparse
import collections
import os
import sys

from . import expand, prototxt, solver as solvers
from .errors import DropInCaffeError, ConfigError

EXPAND_USAGE = """\
examples:
  expand_net.py lenet_train_test.prototxt --replicate conv2=3 --dropin-length 1000 \\
      --solver lenet_solver.prototxt -o out/
  expand_net.py lenet_train_test.prototxt --replicate conv2=3 --no-dropin -o out/   (plain baseline)
  expand_net.py --template alexnet --set train_source=/data/train_lmdb -o out/
  expand_net.py --preset lenet-deep --depth 10 --p-top -o out/
presets (the paper's expanded nets):
%s
"""


def _assignment(convert, what):
    def parse(text):
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError("expected %s, got %r" % (what, text))
        try:
            return name, convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError("expected %s, got %r" % (what, text)) from None
    return parse


def _shape(text):
    return tuple(int(d) for d in text.split(","))


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (and an exception main turns into exit code 2)."""

    def error(self, message):
        raise ConfigError("%s (see --help)" % message)


def expand_parser():
    presets = "\n".join("  %-13s %s;\n  %13s after %s" % (name, p.summary, "", p.source)
                        for name, p in expand.PRESETS.items())
    parser = _Parser(
        prog="expand_net.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Rewrite a Caffe net into its expanded DropIn variant (Smith, Hand & Doster 2015), "
                    "with a matching solver, and print a summary of every layer.",
        epilog=EXPAND_USAGE % presets)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("net", nargs="?", help="the net prototxt (current or old V1 format)")
    source.add_argument("--template", metavar="NAME", help="a built-in stock net: lenet, cifar10_quick, "
                        "cifar10_full, alexnet, vgg11, vgg16")
    source.add_argument("--preset", metavar="NAME", choices=sorted(expand.PRESETS),
                        help="one of the paper's expanded nets: %s" % ", ".join(expand.PRESETS))
    parser.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="where to write the files")
    rewrite = parser.add_argument_group("rewrites")
    rewrite.add_argument("--replicate", action="append", default=[], metavar="LAYER=K",
                         type=_assignment(int, "LAYER=K with an integer K"),
                         help="insert K replicas of LAYER after it, each entering by gradual DropIn")
    rewrite.add_argument("--regularize", action="append", default=[], metavar="LAYER=P",
                         type=_assignment(float, "LAYER=P with a number P"),
                         help="replace Dropout LAYER by a regularizing DropIn taking units from new with "
                              "probability P")
    rewrite.add_argument("--dropin-length", type=int, metavar="L", help="iterations for a new layer to enter")
    rewrite.add_argument("--stagger", type=int, metavar="S", help="DropIn layer i starts entering at i*S")
    rewrite.add_argument("--no-dropin", action="store_true", help="the plain expanded baseline: same replicas, "
                                                                  "no DropIn")
    rewrite.add_argument("--p-top", action="store_true", help="DropIn layers output p so Caffe's log shows it")
    rewrite.add_argument("--add-activation", choices=["relu"], help="give replicas a ReLU where the original "
                                                                    "has no activation")
    rewrite.add_argument("--replica-kernel", type=int, metavar="K", help="kernel size of conv replicas (odd)")
    rewrite.add_argument("--replica-std", type=float, metavar="STD", help="replicas' weights from gaussian(STD)")
    rewrite.add_argument("--depth", type=int, metavar="N", help="lenet-deep: how many conv layers to add")
    rewrite.add_argument("--input-shape", action="append", default=[], metavar="BLOB=C,H,W",
                         type=_assignment(_shape, "BLOB=C,H,W (or N,C,H,W) with integers"),
                         help="shape of a data layer's top whose shape lives in its database")
    out = parser.add_argument_group("solver and output")
    out.add_argument("--solver", metavar="SOLVER", help="the original solver prototxt; emits the matching one")
    out.add_argument("--max-iter", type=int, help="the emitted solver's max_iter")
    out.add_argument("--solver-mode", choices=["CPU", "GPU"], help="the emitted solver's solver_mode")
    out.add_argument("--set", action="append", default=[], metavar="VAR=VALUE", dest="variables",
                     type=_assignment(str, "VAR=VALUE"), help="a template variable (data source, batch size, ...)")
    out.add_argument("--draw", metavar="FILE", help="draw the expanded net to a .png or .svg")
    out.add_argument("--no-validate", action="store_true", help="skip the caffe_pb2 and caffe.Net checks")
    out.add_argument("--force", action="store_true", help="overwrite existing output files")
    out.add_argument("-q", "--quiet", action="store_true", help="print no summary table")
    return parser


def _load(args):
    """(name stem, net tree, solver tree or None, solver stem, plan, known data shapes)."""
    from . import templates
    plan = expand.Plan()
    variables = {name: templates.parse_value(value) for name, value in args.variables}
    if args.preset or args.template:
        template = args.template
        if args.preset:
            template, plan = expand.preset_plan(args.preset, args.depth)
        stem = expand.PRESETS[args.preset].stem if args.preset else template
        net = prototxt.parse(templates.render_net(template, **variables), "template %s" % template)
        solver = prototxt.parse(templates.render_solver(template), "solver of %s" % template)
        data = {} if variables.get("dummy_data") else {"data": templates.data_shape(template, **variables)}
        return stem, net, solver, stem + "_solver", plan, data
    if args.variables:
        raise ConfigError("--set gives template variables; it needs --template or --preset")
    if args.depth is not None:
        raise ConfigError("--depth applies to --preset lenet-deep only")
    if not (args.replicate or args.regularize):
        raise ConfigError("nothing to rewrite in %s: give --replicate LAYER=K or --regularize LAYER=P" % args.net)
    net = prototxt.upgrade_net(prototxt.read(args.net))
    solver = prototxt.read(args.solver) if args.solver else None
    return _stem(args.net), net, solver, _stem(args.solver) if args.solver else None, plan, {}


def _stem(path):
    name = os.path.basename(path)
    for ext in (".gz", ".prototxt", ".pt", ".txt"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


def _apply_options(plan, args):
    plan.replicate += args.replicate
    plan.regularize += args.regularize
    for name, count in args.replicate:
        if count < 1:
            raise ConfigError("--replicate %s=%d: K, the number of replicas, must be >= 1" % (name, count))
    for name, p_new in args.regularize:
        if not 0 < p_new <= 1:
            raise ConfigError("--regularize %s=%s: P, the probability a unit comes from new, must lie in (0, 1]"
                              % (name, p_new))
    if args.dropin_length is not None:
        if args.dropin_length < 1:
            raise ConfigError("--dropin-length must be an integer >= 1, got %d" % args.dropin_length)
        plan.length = args.dropin_length
    if args.stagger is not None:
        plan.stagger = args.stagger
    plan.dropin = plan.dropin and not args.no_dropin
    plan.p_top = plan.p_top or args.p_top
    if args.add_activation:
        plan.activation = "ReLU"
    if args.replica_kernel is not None:
        plan.kernel = args.replica_kernel
    if args.replica_std is not None:
        plan.replica_std = args.replica_std
    return plan


def _check_outputs(args, paths):
    """Refuse, before anything is written, outputs that would clash, overwrite or cannot be written."""
    existing = os.path.abspath(args.output_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError("-o %s: %s is a file; give a directory for the outputs" % (args.output_dir, existing))
    seen = set()
    for path in paths:
        real = os.path.realpath(path)
        if real in seen:
            raise ConfigError("two outputs would both be %s (the net and the solver have the same name?); "
                              "rename one of the inputs" % path)
        seen.add(real)
        if os.path.exists(path) and not args.force:
            raise ConfigError("%s exists; pass --force to overwrite it" % path)
    parent = os.path.dirname(os.path.abspath(args.draw)) if args.draw else None
    if parent and not os.path.isdir(parent) and parent != os.path.abspath(args.output_dir):
        raise ConfigError("--draw %s: the directory %s does not exist" % (args.draw, parent))


Build = collections.namedtuple("Build", "stem net expanded solver solver_stem plan input_shapes notices")


def build(args):
    """Load what the parsed command line names and expand it (nothing is written)."""
    stem, net, solver, solver_stem, plan, input_shapes = _load(args)
    plan = _apply_options(plan, args)
    input_shapes.update(args.input_shape)
    expanded, notices = expand.expand(net, plan, solvers.iter_size(solver), input_shapes)
    return Build(stem, net, expanded, solver, solver_stem, plan, input_shapes, notices)


def run_expand(args, out=sys.stdout, err=sys.stderr):
    stem, net, expanded, solver, solver_stem, plan, input_shapes, notices = build(args)
    suffix = "_" + plan.suffix if plan.suffix else ""
    net_path = os.path.join(args.output_dir, stem + suffix + ".prototxt")
    files = [(net_path, expanded, "net")]
    if solver is not None:
        emitted = solvers.expanded_solver(solver, os.path.abspath(net_path), plan.suffix, args.max_iter,
                                          args.solver_mode)
        files.append((os.path.join(args.output_dir, solver_stem + suffix + ".prototxt"), emitted, "solver"))
        if emitted.get("solver_mode") == "GPU":
            notices.append("Caffe's `caffe train` refuses Python layers with several GPUs (--gpu=0,1); use "
                           "one GPU, or pycaffe's python/train.py --solver %s --gpus 0 1" % files[-1][0])
    elif args.max_iter is not None or args.solver_mode is not None:
        raise ConfigError("--max-iter and --solver-mode set the emitted solver; give it with --solver")
    _check_outputs(args, [path for path, _, _ in files] + ([args.draw] if args.draw else []))
    table = expand.summary(net, expanded, input_shapes)  # TRAIN shapes; then TEST, which raises on
    expand.shapes.infer(expanded, "TEST", input_shapes)  # a shape Caffe could not build
    if not args.no_validate:
        notices += _validate(net, files, input_shapes)
    picture = _draw(expanded, input_shapes, stem + suffix) if args.draw else None
    os.makedirs(args.output_dir, exist_ok=True)
    for path, tree, _ in files:
        prototxt.write(path, tree, force=args.force)
    if picture is not None:
        from .plots import save_figure
        save_figure(picture, args.draw, dpi=100)
    for notice in notices:
        print("note: " + notice, file=err)
    if not args.quiet:
        print(table, file=out)
    for path, _, kind in files:
        print("wrote %s %s" % (kind, path), file=out)
    if args.draw:
        print("wrote drawing %s" % args.draw, file=out)
    return 0


def _validate(original, files, input_shapes):
    """caffe_pb2 parses every emitted file; caffe.Net builds the net. Notices where Caffe is absent."""
    notices = []
    original_ok = True
    try:
        if not prototxt.check_with_caffe_pb2(prototxt.dumps(original), "net"):
            return ["Caffe is not importable here: the emitted files were checked by shape inference only"]
    except ConfigError:
        original_ok = False
        notices.append("this Caffe's caffe_pb2 rejects the input net (a fork's layers or fields?): the emitted "
                       "net was checked by shape inference only")
    for path, tree, kind in files:
        if kind == "solver" or original_ok:
            prototxt.check_with_caffe_pb2(prototxt.dumps(tree), kind, filename=path)
    if original_ok:
        import caffe
        unknown = sorted({layer.get("type") for layer in original.get_all("layer")} - set(caffe.layer_type_list()))
        if unknown:
            return notices + ["this Caffe has no layer type %s (a fork's?): the emitted net was checked by "
                              "caffe_pb2 and shape inference, not built" % ", ".join(unknown)]
        for phase in ("TRAIN", "TEST"):
            _build_in_caffe(files[0][1], phase, input_shapes)
    return notices


def _build_in_caffe(net, phase, input_shapes):
    """Build `net` with caffe.Net at batch 1 (data from DummyData where the sources are absent),
    so that even VGG validates in seconds and little memory."""
    from . import shapes, validate
    found, _ = shapes.infer(net, phase, input_shapes)
    small = validate.with_dummy_data(net, phase, found)
    for layer in small.get_all("layer"):
        for key in ("dummy_data_param", "input_param"):
            param = layer.get(key)
            for shape in param.get_all("shape") if param is not None else ():
                if shape.get_all("dim"):
                    shape.fields[[f[0] for f in shape.fields].index("dim")][1] = 1
            for field in param.fields if param is not None else ():
                if field[0] == "num":  # DummyData's old num/channels/height/width form
                    field[1] = 1
    validate.load_net(small, phase)


def _draw(net, input_shapes, title):
    try:
        import matplotlib
    except ImportError:
        raise ConfigError("--draw needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from . import draw
    shapes = expand.train_shapes(net, input_shapes)
    figure, ax = plt.subplots(figsize=draw.figure_size(net))
    draw.draw_net(ax, expand.shapes.phase_net(net, "TRAIN"), shapes, title)
    figure.tight_layout()
    return figure


def expand_main(argv=None, out=None, err=None):
    out, err = out or sys.stdout, err or sys.stderr
    os.environ.setdefault("GLOG_minloglevel", "2")  # read when caffe loads: keep its log off the screen
    try:
        args = expand_parser().parse_args(argv)
        if args.draw and os.path.splitext(args.draw)[1].lower() not in (".png", ".svg"):
            raise ConfigError("--draw needs a .png or .svg file, got %s" % args.draw)
        return run_expand(args, out, err)
    except DropInCaffeError as error:
        print("expand_net.py: %s" % error, file=err)
        return 2
    except SystemExit as done:  # --help
        return done.code or 0


def run_experiments_parser():
    from . import experiments
    listing = "\n".join("  %-16s %s" % (name, e.description) for name, e in experiments.BUILTIN.items())
    parser = _Parser(prog="run_experiments.py", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Train an experiment's configurations x seeds with the real `caffe train`, "
                                 "then write results.csv, plots and summary.md.",
                     epilog="built-in experiments:\n%s\nor a JSON file: see dropin_caffe/experiments.py" % listing)
    parser.add_argument("experiment", help="a built-in experiment or a JSON file")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="run these seeds instead")
    parser.add_argument("--iterations", type=int, metavar="N", help="train each run for N iterations instead")
    parser.add_argument("--dataset", choices=["mnist", "fashion_mnist", "cifar10"], help="use this dataset instead")
    parser.add_argument("--source", metavar="PATH", help="your own data: MNIST IDX files or CIFAR-10 batches "
                        "(a directory or archive); default: the embedded MNIST / Fashion-MNIST")
    parser.add_argument("-o", "--output-dir", metavar="DIR", help="default: out/EXPERIMENT")
    parser.add_argument("--data-dir", metavar="DIR", default=os.path.join("out", "data"),
                        help="where the LMDBs are made and reused (default out/data)")
    parser.add_argument("--jobs", type=int, default=2, metavar="N", help="runs at once (default 2, one core each)")
    parser.add_argument("--report-only", action="store_true", help="only parse the finished runs and plot")
    return parser


def run_experiments_main(argv=None, out=None, err=None):
    from . import experiments
    out, err = out or sys.stdout, err or sys.stderr
    try:
        args = run_experiments_parser().parse_args(argv)
        experiment = experiments.load(args.experiment)
        if args.seeds:
            experiment.seeds = args.seeds
        if args.iterations is not None:
            if args.iterations < 1:
                raise ConfigError("--iterations must be >= 1, got %d" % args.iterations)
            experiment.iterations = args.iterations
            experiment.test_interval = min(experiment.test_interval, args.iterations)
        if args.dataset:
            experiment.dataset = args.dataset
        if args.jobs < 1:
            raise ConfigError("--jobs must be >= 1, got %d" % args.jobs)
        out_dir = args.output_dir or os.path.join("out", experiments.slug(experiment.name))
        if args.report_only:
            runs, failed = experiments.plan_runs(experiment, out_dir), []
        else:
            runs, failed = experiments.run_experiment(experiment, out_dir, args.data_dir, args.source, args.jobs, err)
        summary, picture = experiments.report(experiment, runs, out_dir)
    except DropInCaffeError as error:
        print("run_experiments.py: %s" % error, file=err)
        return 2
    except SystemExit as done:  # --help
        return done.code or 0
    except KeyboardInterrupt:
        print("\nrun_experiments.py: stopped; finished runs are kept, run the same command to go on", file=err)
        return 130
    print(summary, file=out)
    print("\nplot: %s (and .svg); table: %s; every value: %s" % (
        picture, os.path.join(out_dir, "summary.md"), os.path.join(out_dir, "results.csv")), file=out)
    if failed:
        print("%d runs failed (see above); rerun the command to retry them" % len(failed), file=err)
        return 1
    return 0
