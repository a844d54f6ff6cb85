"""expand_net's library: a Plan of rewrites applied to a net, the paper's presets, the summary.

A Plan names what to rewrite (`replicate`, `regularize`) and how (DropIn length, stagger, ...);
`expand` applies it to a current-format net after upgrading old V1 files. The presets are the
expanded nets of Smith, Hand & Doster (2015), built from the stock templates by the same code.
"""
import collections
import dataclasses
import typing

from . import rewrite, shapes
from .errors import ConfigError

WEIGHT_TYPES = {"Convolution", "Deconvolution", "InnerProduct"}


@dataclasses.dataclass
class Plan:
    """What expand_net does to a net. Counts and names per replicated layer, P per Dropout."""
    replicate: typing.List[typing.Tuple[str, int]] = dataclasses.field(default_factory=list)
    regularize: typing.List[typing.Tuple[str, float]] = dataclasses.field(default_factory=list)
    dropin: bool = True
    length: typing.Optional[int] = None
    stagger: int = 0
    p_top: bool = False
    activation: typing.Optional[str] = None
    kernel: typing.Optional[int] = None
    replica_std: typing.Optional[float] = None
    names: typing.Dict[str, typing.List[str]] = dataclasses.field(default_factory=dict)

    @property
    def rewrites(self):
        return bool(self.replicate or self.regularize)

    @property
    def suffix(self):
        """The output files' suffix: _dropin, _plain (no DropIn) or none (nothing rewritten)."""
        if not self.rewrites:
            return ""
        return "dropin" if self.dropin or self.regularize else "plain"


Preset = collections.namedtuple("Preset", "template stem plan source summary")

PRESETS = {
    "lenet-deep": Preset("lenet", "lenet_deep", Plan(replicate=[("conv2", 5)], kernel=3, activation="ReLU",
                                                     replica_std=0.01, length=1000),
                         "the paper's MNIST experiments (LeNet with extra conv layers)",
                         "LeNet plus N (--depth, default 5) 3x3 conv+ReLU layers after conv2 that keep its "
                         "50x8x8 shape, their weights gaussian std 0.01 as in the paper (LeNet's own: xavier)"),
    "cifar10-11": Preset("cifar10_quick", "cifar10_11", Plan(replicate=[("conv1", 2), ("conv2", 2), ("conv3", 2)],
                                               activation="ReLU", length=2000),
                         "the paper's CIFAR-10 experiment (3 to 11 layers)",
                         "the CIFAR-10 quick net with each conv layer replicated twice: 9 conv + 2 fc = "
                         "11 weight layers"),
    "alexnet-13": Preset("alexnet", "alexnet_13", Plan(replicate=[("conv%d" % i, 1) for i in range(1, 6)], kernel=3,
                                         length=10000),
                         "the paper's ImageNet experiment with AlexNet (8 to 13 layers)",
                         "AlexNet with one 3x3 replica after each of its 5 conv layers: 13 weight layers"),
    "vgg16-dropin": Preset("vgg11", "vgg16", Plan(replicate=[(n, 1) for n in
                                                    ("conv1_1", "conv2_1", "conv3_2", "conv4_2", "conv5_2")],
                                         names={"conv1_1": ["conv1_2"], "conv2_1": ["conv2_2"],
                                                "conv3_2": ["conv3_3"], "conv4_2": ["conv4_3"],
                                                "conv5_2": ["conv5_3"]},
                                         length=20000),
                           "the paper's VGG-16 experiment (no shallow-net weight transfer)",
                           "VGG-A's 11 layers with VGG-D's 5 extra conv layers (conv1_2, conv2_2, conv3_3, "
                           "conv4_3, conv5_3) entering by DropIn: VGG-16 trained without weight transfer"),
}


def preset_plan(name, depth=None):
    """The template name and a fresh Plan of preset `name` (`depth` sets lenet-deep's N)."""
    if name not in PRESETS:
        raise ConfigError("unknown preset %r; choose one of %s" % (name, ", ".join(sorted(PRESETS))))
    preset = PRESETS[name]
    plan = dataclasses.replace(preset.plan, replicate=list(preset.plan.replicate))
    if depth is not None:
        if name != "lenet-deep":
            raise ConfigError("--depth applies to the lenet-deep preset only")
        if depth < 1:
            raise ConfigError("--depth must be an integer >= 1, got %d" % depth)
        plan.replicate = [("conv2", depth)]
    return preset.template, plan


def train_shapes(net, input_shapes=None):
    """Blob shapes of the TRAIN phase (None where unknown)."""
    return shapes.infer(net, "TRAIN", input_shapes)[0]


def expand(net, plan, iter_size=1, input_shapes=None):
    """Apply `plan` to a copy of `net` (already upgraded). Returns (expanded net, notices)."""
    if plan.dropin and plan.replicate and (not isinstance(plan.length, int) or plan.length < 1):
        raise ConfigError("--dropin-length L must be an integer >= 1 (iterations for new layers to enter), "
                          "got %s; or pass --no-dropin for the plain expanded net" % (plan.length,))
    if plan.stagger < 0:
        raise ConfigError("--stagger must be an integer >= 0, got %d" % plan.stagger)
    net = net.copy()
    notices = []
    filler = rewrite.gaussian_filler(plan.replica_std) if plan.replica_std is not None else None
    dropin = {"length": plan.length, "iter_size": iter_size} if plan.dropin else None
    for name, count in plan.replicate:
        rewrite.replicate(net, name, count, dropin=dropin, p_top=plan.p_top, activation=plan.activation,
                          kernel=plan.kernel, filler=filler, names=plan.names.get(name),
                          shapes=train_shapes(net, input_shapes), notices=notices)
    for name, p_new in plan.regularize:
        rewrite.regularize(net, name, p_new, train_shapes(net, input_shapes), iter_size=iter_size,
                           p_top=plan.p_top, notices=notices)
    if plan.stagger:
        rewrite.stagger(net, plan.stagger)
    return net, notices


def _format_shape(shape):
    if shape is None:
        return "?"
    return "x".join(map(str, shape)) if shape else "scalar"


def _totals(layer_shapes):
    weights = sum(1 for info in layer_shapes if info.type in WEIGHT_TYPES)
    learnable = [info.params for info in layer_shapes if info.type != "Python"]
    total = None if None in learnable else sum(learnable)
    return weights, total


def summary(original, expanded, input_shapes=None, phase="TRAIN"):
    """A text table: every layer of `expanded` with its output shapes and parameter count, DropIn
    and Resize marked, then totals for `original` and `expanded`."""
    _, rows = shapes.infer(expanded, phase, input_shapes)
    layers = {layer.get("name"): layer for layer in rewrite.layers(expanded)}
    lines = []
    for info in rows:
        layer = layers.get(info.name)
        kind = (shapes.our_layer(layer) if layer is not None else None) or info.type
        mark = "*" if kind in ("DropIn", "Resize") else " "
        outputs = ", ".join(_format_shape(shape) for _, shape in info.tops) or "-"
        params = "?" if info.params is None else "{:,}".format(info.params)
        lines.append((mark + info.name, kind, outputs, params))
    widths = [max(len(row[i]) for row in lines + [("layer", "type", "output", "params")]) for i in range(4)]
    out = ["%-*s  %-*s  %-*s  %*s" % (widths[0], " layer", widths[1], "type", widths[2], "output (%s)" % phase,
                                      widths[3], "params")]
    out += ["%-*s  %-*s  %-*s  %*s" % (widths[0], a, widths[1], b, widths[2], c, widths[3], d)
            for a, b, c, d in lines]
    before = _totals(shapes.infer(original, phase, input_shapes)[1])
    after = _totals(rows)
    marked = sum(1 for line in lines if line[0].startswith("*"))
    unknown = sum(1 for line in lines if "?" in line[2])
    count = lambda n: "?" if n is None else "{:,}".format(n)  # noqa: E731
    out.append("original: %d weight layers, %s parameters; expanded: %d weight layers, %s parameters, "
               "%d DropIn/Resize layers (*)" % (before[0], count(before[1]), after[0], count(after[1]), marked))
    if unknown:
        out.append("%d layers have outputs of unknown shape (?): a layer type shape inference does not know, or "
                   "a data layer without a shape (give it with --input-shape BLOB=C,H,W)" % unknown)
    return "\n".join(out)
