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
import os
import shlex
import typing

from .. import files
from ..errors import ConfigError
from . import identity, prototxt, reader, start, summary, templates, vocabulary
from . import plan as plans
from . import shapes as inference
from . import solver as solvers
from . import validate as validation
from .options import Options
from .plan import PRESETS


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
        """The file name of `initial_weights` (the start from --weights, or the replicas' identity start)
        as `write` writes it."""
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


def _source(options, template, plan):
    """(name stem, net, solver or None, solver stem, data shapes) of what `options` expand."""
    if options.net is None:
        variables = options.settings
        name = PRESETS[options.preset].stem if options.preset else template
        tree = plans.set_widths(prototxt.parse(templates.render_net(template, **variables), "template %s" % template),
                                plan.widths)
        solver_tree = prototxt.parse(templates.render_solver(template), "solver of %s" % template)
        data = {} if variables.get("dummy_data") else {"data": templates.data_shape(template, **variables)}
        return name, tree, solver_tree, name + "_solver", data
    solver = options.solver
    solver_tree = reader.read_prototxt(solver, "solver") if solver is not None else None
    solver_name = reader.name_of(solver, "solver") if solver is not None else None
    return reader.name_of(options.net, "net"), reader.read_net(options.net), solver_tree, solver_name, {}


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


def expand_net(net=None, **keywords):
    """Expand a net into its DropIn variant; returns an `Expansion` (nothing is written).

    net: a path, prototxt text, Message or caffe_pb2.NetParameter (a NetSpec's `to_proto()`), in the
    current or V1 format; or template= a built-in stock net, or preset= one of our presets after the
    paper's expanded nets (PRESETS). Every keyword is the command-line flag of the same name
    (`options.OPTIONS`, `expand_net --help`), with the flag's values as Python values:
    replicate={LAYER: K}, regularize={DROPOUT_LAYER: P or (P, PREV_BLOB)}, widen={LAYER: C2},
    input_shape={BLOB: (C, H, W) or (N, C, H, W)}, settings={VAR: VALUE} (--set), dropin=False
    (--no-dropin), validate=False (--no-validate); solver: a path, text or Message; weights: a
    trained .caffemodel of the net (the start, `initial_weights`, and its proof: `start.py`).
    """
    options = Options.from_keywords(net=net, **keywords)
    template, plan = options.plan()
    name, original, solver_tree, solver_name, data = _source(options, template, plan)
    data.update(options.input_shape)
    inferred = []  # what inference chose (a batch, a user's shape over a declared one): once each
    data.update(_database_shapes(original, data, inferred))
    _, original_layers = inference.infer(original, "TRAIN", data, notes=inferred)
    expanded, notes, replicas = plans.apply_plan(original, plan, solvers.iter_size(solver_tree), data)
    widened = start.widenings(original, plan.widen) if options.weights is not None else []
    suffix = "_" + plan.suffix if plan.suffix else ""
    emitted_solver = None
    if solver_tree is not None:
        emitted_solver = solvers.expanded_solver(solver_tree, name + suffix + ".prototxt", plan.suffix,
                                                 options.max_iter, options.solver_mode)
        snapshots = solvers.snapshot_note(emitted_solver)
        if snapshots:
            notes.append(snapshots)
        if emitted_solver.get("solver_mode") == "GPU" and not plan.native:
            notes.append("Caffe's `caffe train` refuses Python layers with several GPUs (--gpu=0,1); use "
                         "one GPU, or pycaffe's python/train.py --solver %s --gpus 0 1" % (solver_name + suffix +
                                                                                           ".prototxt"))
    phases = {phase: inference.infer(expanded, phase, data, notes=inferred) for phase in ("TRAIN", "TEST")}
    notes[:0] = list(dict.fromkeys(inferred))
    shapes = {phase: found for phase, (found, _) in phases.items()}
    initial = identity.identity_weights(expanded, replicas, *phases["TRAIN"]) if plan.identity else None
    if options.validate:
        notes += validation.prove(original, expanded, emitted_solver, shapes)
    if options.weights is not None:
        trained = start.read_trained(options.weights)
        initial, started = start.initial_weights(options.weights, trained, original, expanded, shapes, initial,
                                                   widened)
        notes += started
        if options.validate:
            checks = start.comparisons(plan, expanded, replicas)
            notes += start.prove(original, expanded, trained, initial, shapes, checks)
    table = summary.rows(expanded, phases["TRAIN"][1])
    return Expansion(expanded, emitted_solver, table, notes, summary.totals(summary.rows(original, original_layers)),
                     summary.totals(table), name + suffix + ".prototxt",
                     solver_name + suffix + ".prototxt" if solver_name else None, shapes, name + suffix, initial)
