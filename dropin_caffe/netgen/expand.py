"""expand_net as a library: read -> upgrade -> rewrite -> infer -> validate, one function.

    from dropin_caffe import expand_net
    expansion = expand_net("lenet_train_test.prototxt", replicate={"conv2": 3}, dropin_length=1000,
                           solver="lenet_solver.prototxt")
    print(expansion.table)
    expansion.write("out/")          # out/lenet_train_test_dropin.prototxt, out/lenet_solver_dropin.prototxt

Every keyword means exactly what the command-line flag of the same name means
(`tools/expand_net.py --help`); `expand_net` returns an `Expansion` and writes nothing.
"""
import dataclasses
import math
import os
import shlex
import typing

from .. import files
from ..errors import ConfigError
from . import plan as plans, prototxt, shapes as inference, solver as solvers, summary, templates, upgrade
from . import identity, validate as validation, vocabulary


@dataclasses.dataclass
class Expansion:
    """An expanded net, its solver, and what expand_net prints about them.

    net_text, solver_text: the emitted prototxts (solver_text None without a solver).
    rows: the summary table as data (`summary.Row`: layer, type, TRAIN output shapes, parameter
    count, marked = DropIn/Resize). notes: what the user should know (one line each).
    original, expanded: `summary.Totals` (weight layers, parameters, DropIn/Resize layers).
    net_name, solver_name: the file names `write` gives them.
    shapes: {phase: {blob: shape}} of the expanded net. title: its name in drawings.
    """
    net: prototxt.Message
    solver: typing.Optional[prototxt.Message]
    rows: list
    notes: list
    original: summary.Totals
    expanded: summary.Totals
    net_name: str
    solver_name: typing.Optional[str]
    shapes: dict
    title: str
    initial_weights: typing.Optional[dict] = None

    @property
    def weights_name(self):
        """The file name of `initial_weights` (the replicas' identity start) as `write` writes it."""
        return None if self.initial_weights is None else self.net_name[: -len(".prototxt")] + "_init.caffemodel"

    def train_command(self, out_dir):
        """The `caffe train` command for the written solver: with --weights when there is an initial
        .caffemodel (Caffe's solver has no field for one). None without a solver."""
        if self.solver is None:
            return None
        argv = ["caffe", "train", "--solver=" + os.path.join(out_dir, self.solver_name)]
        if self.initial_weights is not None:
            argv.append("--weights=" + os.path.join(out_dir, self.weights_name))
        return " ".join(shlex.quote(word) for word in argv)

    @property
    def net_text(self):
        return prototxt.dumps(self.net)

    @property
    def solver_text(self):
        return None if self.solver is None else prototxt.dumps(self.solver)

    @property
    def table(self):
        """The summary as expand_net prints it."""
        return summary.render(self.rows, self.original, self.expanded)

    def outputs(self, out_dir, draw=None):
        """[(kind, path)] of what `write(out_dir, draw=draw)` writes."""
        found = [("net", os.path.join(out_dir, self.net_name))]
        if self.solver is not None:
            found.append(("solver", os.path.join(out_dir, self.solver_name)))
        if self.initial_weights is not None:
            found.append(("weights", os.path.join(out_dir, self.weights_name)))
        return found + ([("drawing", draw)] if draw else [])

    def write(self, out_dir, force=False, draw=None):
        """Write the net (and solver, and with `draw` a .png/.svg drawing) into `out_dir`, all or
        none: every path is checked before anything is written. Returns `outputs(out_dir, draw)`."""
        written = self.outputs(out_dir, draw)
        if draw:
            if os.path.splitext(draw)[1].lower() not in (".png", ".svg"):
                raise ConfigError("--draw needs a .png or .svg file, got %s" % draw)
            files.check_output(draw, force)  # its folder must exist (the output folder is made)
        # The solver's `net` is the written net's absolute path (Caffe resolves it from its own cwd).
        solver = None
        if self.solver is not None:
            solver = self.solver.copy()
            solver.set("net", os.path.abspath(written[0][1]))
        contents = [prototxt.dumps(self.net)] + ([prototxt.dumps(solver)] if solver is not None else [])
        if self.initial_weights is not None:
            contents.append(identity.caffemodel(self.initial_weights))
        if draw:
            contents.append(self._drawing())
        files.write_into(out_dir, [(path, content) for (_, path), content in zip(written, contents)], force)
        return written

    def _drawing(self):
        """A function that saves the drawing of the TRAIN net to a given path: Graphviz's dot when
        installed, else matplotlib's drawing with a note on installing Graphviz."""
        from . import draw
        net = inference.phase_net(self.net, "TRAIN")
        if draw.dot_path() is not None:
            text = draw.dot_source(net, self.shapes["TRAIN"], self.title)
            return lambda path: draw.render(text, path)
        try:
            import matplotlib
        except ImportError:
            raise ConfigError("--draw needs Graphviz (%s) or matplotlib (pip install matplotlib)"
                              % draw.INSTALL_GRAPHVIZ) from None
        self.notes.append("Graphviz's dot is not installed: drew with matplotlib, which is hard to read on "
                          "large nets; for a clearer drawing: %s" % draw.INSTALL_GRAPHVIZ)
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, ax = plt.subplots(figsize=draw.figure_size(net))
        draw.draw_net(ax, net, self.shapes["TRAIN"], self.title)
        figure.tight_layout()

        def save(path):
            try:
                figure.savefig(path, dpi=100)
            finally:
                plt.close(figure)
        return save


def _is_text(value):
    return "\n" in value or "{" in value


def _is_protobuf(value):
    """A protobuf message, such as the caffe_pb2.NetParameter of Caffe's `NetSpec.to_proto()`."""
    return hasattr(value, "DESCRIPTOR") and hasattr(value, "SerializeToString")


def read_prototxt(value, what):
    """A prototxt given as a Message, a protobuf message (caffe_pb2's), its text, or a path."""
    if isinstance(value, prototxt.Message):
        return value.copy()
    if _is_protobuf(value):
        from google.protobuf import text_format
        return prototxt.parse(text_format.MessageToString(value), "<%s message>" % what)
    if not isinstance(value, (str, os.PathLike)):
        raise ConfigError("%s must be a path, prototxt text or a message, got %s" % (what, type(value).__name__))
    if isinstance(value, str) and _is_text(value):
        return prototxt.parse(value, "<%s text>" % what)
    return prototxt.read(value)


def stem(path):
    """A file name without its folder and its prototxt extensions (.prototxt, .pt, .txt, .gz)."""
    name = os.path.basename(path)
    for ext in (".gz", ".prototxt", ".pt", ".txt"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


def _source(net, template, preset, depth, width, settings, solver):
    """(name stem, net, solver or None, solver stem, plan, data shapes) of what is to be expanded."""
    if sum(x is not None for x in (net, template, preset)) != 1:
        raise ConfigError("give exactly one of a net, a template or a preset, got %s"
                          % (", ".join(k for k, v in (("net", net), ("template", template), ("preset", preset))
                                       if v is not None) or "none"))
    if preset is None and (depth is not None or width is not None):
        raise ConfigError("%s applies to --preset lenet-deep only" % ("--depth" if depth is not None else "--width"))
    plan = plans.Plan()
    variables = {name: templates.parse_value(value) if isinstance(value, str) else value
                 for name, value in (settings or {}).items()}
    if net is None:
        if solver is not None:
            raise ConfigError("--solver goes with a net file; a template or preset brings its own solver")
        if preset is not None:
            template, plan = plans.preset_plan(preset, depth, width)
        name = plans.PRESETS[preset].stem if preset else template
        tree = plans.set_widths(prototxt.parse(templates.render_net(template, **variables), "template %s" % template),
                                plan.widths)
        solver_tree = prototxt.parse(templates.render_solver(template), "solver of %s" % template)
        data = {} if variables.get("dummy_data") else {"data": templates.data_shape(template, **variables)}
        return name, tree, solver_tree, name + "_solver", plan, data
    if variables:
        raise ConfigError("--set gives template variables; it needs --template or --preset")
    name = stem(net) if not is_inline(net) else "net"
    tree = read_prototxt(net, "net")
    vocabulary.check_structure(tree)  # before upgrade, so that layer #N counts the user's layers
    tree = upgrade.upgrade_net(tree)
    vocabulary.check_typos(tree)
    solver_tree = read_prototxt(solver, "solver") if solver is not None else None
    solver_name = None
    if solver is not None:
        solver_name = stem(solver) if not is_inline(solver) else "solver"
    return name, tree, solver_tree, solver_name, plan, {}


def is_inline(value):
    """`value` is a prototxt given inline (text or a message), not a path."""
    return isinstance(value, prototxt.Message) or _is_protobuf(value) or (isinstance(value, str) and _is_text(value))


def _pairs(value, option):
    """A dict (or list of pairs) as a list of (name, value) pairs."""
    if value is None:
        return []
    pairs = list(value.items()) if isinstance(value, dict) else list(value)
    names = [name for name, _ in pairs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError("%s %s is given twice; give each layer once" % (option, twice[0]))
    return pairs


def _options(plan, replicate, regularize, dropin_length, stagger, length_growth, dropin, p_top, add_activation,
             replica_kernel, replica_std, widen=None, dropin_train=None):
    plan.replicate += _pairs(replicate, "--replicate")
    plan.regularize += _pairs(regularize, "--regularize")
    plan.widen += _pairs(widen, "--widen")
    for name, width in plan.widen:
        if type(width) is not int or width < 2:
            raise ConfigError("--widen %s=%s: C2, the number of outputs to grow to, must be an integer above the "
                              "layer's num_output" % (name, width))
    for name, count in plan.replicate:
        if type(count) is not int or count < 1:
            raise ConfigError("--replicate %s=%s: K, the number of replicas, must be >= 1" % (name, count))
    for name, value in plan.regularize:
        p_new, prev = value if isinstance(value, tuple) and len(value) == 2 else (value, None)
        if isinstance(p_new, bool) or not isinstance(p_new, (int, float)) or not 0 < p_new <= 1:
            raise ConfigError("--regularize %s=%s: P, the probability a unit comes from new, must lie in (0, 1]"
                              % (name, p_new))
        if prev is not None and (not isinstance(prev, str) or not prev):
            raise ConfigError("--regularize %s=%s:%s: BLOB, the blob prev is taken from, must be a blob name"
                              % (name, p_new, prev))
    if dropin_length is not None:
        if type(dropin_length) is not int or dropin_length < 1:
            raise ConfigError("--dropin-length must be an integer >= 1, got %s" % (dropin_length,))
        plan.length = dropin_length
    if stagger is not None:
        plan.stagger = stagger
    if length_growth is not None:
        plans.check_length_growth(length_growth, None, 0)
        plan.length_growth = length_growth
    plan.dropin = plan.dropin and dropin
    plan.p_top = plan.p_top or p_top
    if add_activation is not None:
        if add_activation != "relu":
            raise ConfigError("--add-activation must be relu, got %r" % (add_activation,))
        plan.activation = "ReLU"
    if replica_kernel is not None:
        plan.kernel = replica_kernel
    if replica_std is not None:
        # Caffe's gaussian filler CHECKs sigma > 0 and aborts the whole process; nan passes that
        # check and fills the weights with nan. Refuse both here, before any net is written.
        if isinstance(replica_std, bool) or not isinstance(replica_std, (int, float)) \
                or not math.isfinite(replica_std) or replica_std <= 0:
            raise ConfigError("--replica-std STD, the std of the replicas' gaussian weights, must be a finite "
                              "number > 0 (e.g. 0.01), got %s" % (replica_std,))
        plan.replica_std = replica_std
    if dropin_train is not None:
        if dropin_train not in ("select", "blend"):
            raise ConfigError('--dropin-train must be "select" (each unit from new with probability p, the default) or "blend" (a '
                              'deterministic fade-in), got %r' % (dropin_train,))
        if dropin_train == "blend" and not dropin:
            raise ConfigError("--dropin-train blend sets how DropIn layers train, but --no-dropin emits none; "
                              "drop one of the two")
        plan.train = dropin_train
    return plan


def _database_shapes(net, given, notes):
    """{top: (C, H, W)} of the data tops whose shapes live in a database that is here (TRAIN's, else
    TEST's), as Caffe reads them, with a note each; the batch stays each phase's own."""
    read = {}
    for phase in vocabulary.PHASES:
        for top, shape in validation.source_shapes(net, phase, dict(given, **read)).items():
            read[top] = shape[1:] if len(shape) == 4 else shape  # C,H,W: each phase keeps its batch
            notes.append("the shape of '%s', %s, is read from its database in phase %s (its first datum, as Caffe "
                         "reads it)" % (top, "x".join(map(str, read[top])), phase))
    return read


def expand_net(net=None, *, template=None, preset=None, replicate=None, regularize=None, widen=None,
               dropin_length=None, stagger=None, length_growth=None, dropin=True, p_top=False, add_activation=None,
               replica_kernel=None, replica_std=None, depth=None, width=None, input_shape=None, solver=None,
               max_iter=None, solver_mode=None, settings=None, validate=True, native=False, dropin_train=None,
               replica_init=None):
    """Expand a net into its DropIn variant; returns an `Expansion` (nothing is written).

    net: a path, prototxt text, Message or caffe_pb2.NetParameter (a NetSpec's `to_proto()`), in the
    current or V1 format; or template= a built-in stock net, or preset= one of our presets after the
    paper's expanded nets (PRESETS).
    replicate: {LAYER: K}; regularize: {DROPOUT_LAYER: P or (P, PREV_BLOB)}; widen: {LAYER: C2};
    dropin=False is --no-dropin (the plain expanded net); length_growth G gives DropIn i (in net
    order) length round(L * G**i); depth and width set lenet-deep's N and C; input_shape:
    {BLOB: (C, H, W) or (N, C, H, W)}; settings: template variables (--set); solver: the original
    solver (a path, text or Message); validate=False is --no-validate; native=True emits the
    native (C++) layer types, DropIn and DropInResize, with the same param_str; dropin_train="blend"
    puts "train": "blend" (a deterministic fade-in) in every gradual DropIn's param_str;
    replica_init="identity" starts every replica as the identity map (`initial_weights`, which
    `write` writes as a .caffemodel for `caffe train --weights`). The other keywords are the flags
    of the same names.
    """
    name, original, solver_tree, solver_name, plan, data = _source(net, template, preset, depth, width, settings,
                                                                    solver)
    plan = _options(plan, replicate, regularize, dropin_length, stagger, length_growth, dropin, p_top,
                    add_activation, replica_kernel, replica_std, widen, dropin_train)
    plan.native = native
    if replica_init not in (None, "identity"):
        raise ConfigError('--replica-init must be "identity" (or left out for the replicas\' fillers), got %r'
                          % (replica_init,))
    if replica_init is not None and not plan.replicate:
        raise ConfigError("--replica-init identity starts replicas; give --replicate LAYER=K (or a preset)")
    if net is not None and not plan.rewrites:
        raise ConfigError("nothing to rewrite in %s: give --replicate LAYER=K, --regularize LAYER=P or --widen "
                          "LAYER=C2" % (net if not is_inline(net) else "the net"))
    data.update(input_shape or {})
    inferred = []  # what inference chose (a batch, a user's shape over a declared one): once each
    data.update(_database_shapes(original, data, inferred))
    found, original_layers = inference.infer(original, "TRAIN", data, notes=inferred)
    replicas = []
    expanded, notes = plans.apply_plan(original, plan, found, solvers.iter_size(solver_tree), data, replicas)
    suffix = "_" + plan.suffix if plan.suffix else ""
    emitted_solver = None
    if solver_tree is not None:
        emitted_solver = solvers.expanded_solver(solver_tree, name + suffix + ".prototxt", plan.suffix, max_iter,
                                                 solver_mode)
        snapshots = solvers.snapshot_note(emitted_solver)
        if snapshots:
            notes.append(snapshots)
        if emitted_solver.get("solver_mode") == "GPU" and not native:
            notes.append("Caffe's `caffe train` refuses Python layers with several GPUs (--gpu=0,1); use "
                         "one GPU, or pycaffe's python/train.py --solver %s --gpus 0 1" % (solver_name + suffix +
                                                                                           ".prototxt"))
    elif max_iter is not None or solver_mode is not None:
        raise ConfigError("--max-iter and --solver-mode set the emitted solver; give it with --solver")
    phases = {phase: inference.infer(expanded, phase, data, notes=inferred) for phase in ("TRAIN", "TEST")}
    notes[:0] = list(dict.fromkeys(inferred))
    shapes = {phase: found for phase, (found, _) in phases.items()}
    initial = identity.identity_weights(expanded, replicas, shapes["TRAIN"]) if replica_init else None
    if validate:
        notes += validation.prove(original, expanded, emitted_solver, shapes)
    table = summary.rows(expanded, phases["TRAIN"][1])
    return Expansion(expanded, emitted_solver, table, notes, summary.totals(summary.rows(original, original_layers)),
                     summary.totals(table), name + suffix + ".prototxt",
                     solver_name + suffix + ".prototxt" if solver_name else None, shapes, name + suffix, initial)
