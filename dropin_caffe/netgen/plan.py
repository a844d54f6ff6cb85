"""A Plan of rewrites for a net, and our presets after the paper's expanded nets.

A Plan names what to rewrite (`replicate`, `regularize`, `widen`) and how (DropIn length, stagger, ...);
`apply_plan` applies it to a current-format net. The presets are our versions of the expanded
nets of Smith, Hand & Doster (2015), built from the stock templates by the same code. Where the
paper is silent they are our choice: the replicated layers, replica kernels, gaussian std 0.01 of
lenet-deep's added layers, the default depth and width and the default DropIn lengths.

Tailored lengths (`length_growth` G): gradual DropIn i (in net order, from 0) gets length
round(L * G**i), at least 1. With `stagger` S it still starts at i * S, not when the previous
layer has finished entering: staggered layers enter overlapping, each after the previous one has
started. The paper names DropIn layers entering at different iterations and tailored DropIn
lengths per layer as future work; the growth rule and this reading of it are our choice.
"""
import collections
import dataclasses
import math
import typing

from . import rewrite, shapes as inference
from ..errors import ConfigError


@dataclasses.dataclass
class Plan:
    """What expand_net does to a net. Counts and names per replicated layer, P (or P and the
    blob prev comes from) per Dropout; `widths` {layer: num_output} are set on the net before
    anything is inferred or rewritten (lenet-deep's --width), so replicas and later layers follow."""
    replicate: typing.List[typing.Tuple[str, int]] = dataclasses.field(default_factory=list)
    regularize: typing.List[typing.Tuple[str, float]] = dataclasses.field(default_factory=list)
    widen: typing.List[typing.Tuple[str, int]] = dataclasses.field(default_factory=list)
    dropin: bool = True
    length: typing.Optional[int] = None
    stagger: int = 0
    length_growth: float = 1.0
    p_top: bool = False
    activation: typing.Optional[str] = None
    kernel: typing.Optional[int] = None
    replica_std: typing.Optional[float] = None
    names: typing.Dict[str, typing.List[str]] = dataclasses.field(default_factory=dict)
    native: bool = False
    widths: typing.Dict[str, int] = dataclasses.field(default_factory=dict)
    train: str = "select"

    @property
    def rewrites(self):
        return bool(self.replicate or self.regularize or self.widen)

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
                         "after the paper's MNIST experiments (LeNet with extra conv layers)",
                         "LeNet plus N (--depth, default 5) 3x3 conv+ReLU layers after conv2 that keep its "
                         "Cx8x8 shape (--width C, default LeNet's 50), their weights gaussian std 0.01 (our "
                         "choice; LeNet's own: xavier)"),
    "cifar10-11": Preset("cifar10_quick", "cifar10_11", Plan(replicate=[("conv1", 2), ("conv2", 2), ("conv3", 2)],
                                               activation="ReLU", length=2000),
                         "after the paper's CIFAR-10 experiment (3 to 11 layers)",
                         "the CIFAR-10 quick net with each conv layer replicated twice (our choice of net "
                         "and replicas): 9 conv + 2 fc = 11 weight layers"),
    "alexnet-13": Preset("alexnet", "alexnet_13", Plan(replicate=[("conv%d" % i, 1) for i in range(1, 6)], kernel=3,
                                         length=10000),
                         "after the paper's ImageNet experiment with AlexNet (8 to 13 layers)",
                         "AlexNet with one 3x3 replica (our choice of kernel) after each of its 5 conv "
                         "layers: 13 weight layers"),
    "vgg16-dropin": Preset("vgg11", "vgg16", Plan(replicate=[(n, 1) for n in
                                                    ("conv1_1", "conv2_1", "conv3_2", "conv4_2", "conv5_2")],
                                         names={"conv1_1": ["conv1_2"], "conv2_1": ["conv2_2"],
                                                "conv3_2": ["conv3_3"], "conv4_2": ["conv4_3"],
                                                "conv5_2": ["conv5_3"]},
                                         length=20000),
                           "after the paper's VGG-16 experiment (no shallow-net weight transfer)",
                           "VGG-A's 11 layers with VGG-D's 5 extra conv layers (conv1_2, conv2_2, conv3_3, "
                           "conv4_3, conv5_3) entering by DropIn: VGG-16 trained without weight transfer"),
}


def preset_plan(name, depth=None, width=None):
    """The template name and a fresh Plan of preset `name` (`depth` sets lenet-deep's N, `width`
    the channels C of its conv2 and of the layers added after it)."""
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
    if width is not None:
        if name != "lenet-deep":
            raise ConfigError("--width applies to the lenet-deep preset only")
        if type(width) is not int or width < 1:
            raise ConfigError("--width must be an integer >= 1 (channels of conv2 and the added layers), got %s"
                              % (width,))
        plan.widths = {"conv2": width}
    return preset.template, plan


def set_widths(net, widths):
    """`net` with the num_output of each layer in `widths` {layer: C} set to C (in place)."""
    for name, channels in widths.items():
        layer = rewrite.find_layer(net, name, "--width")
        param = layer.get("convolution_param") or layer.get("inner_product_param")
        if param is None:
            raise ConfigError("--width: %s is a %s layer; it needs a Convolution or InnerProduct" % (name, layer.get("type")))
        param.set("num_output", channels)
    return net


def check_length_growth(growth, length, count):
    """G, the factor between consecutive DropIn lengths: > 0, and L * G**(count - 1) finite."""
    if isinstance(growth, bool) or not isinstance(growth, (int, float)) or not math.isfinite(growth) or growth <= 0:
        raise ConfigError("--length-growth G, the factor between consecutive DropIn lengths, must be a finite "
                          "number > 0 (1 keeps one length), got %s" % (growth,))
    if count > 1 and length is not None and math.log(length) + (count - 1) * math.log(growth) > math.log(2 ** 62):
        raise ConfigError("--length-growth %s: DropIn %d would get length %d * %s**%d, more than 2**62 iterations; "
                          "choose a smaller G or L" % (growth, count, length, growth, count - 1))


def apply_plan(net, plan, shapes, iter_size=1, input_shapes=None, replicas=None):
    """Apply `plan` to a copy of `net` (already upgraded). `shapes` are the TRAIN shapes of `net`
    (`shapes.infer` with `input_shapes`); the rewrites add the shapes of the blobs they make, so the
    net is inferred once, not once per rewrite; only widening, which changes the shapes downstream,
    infers it again. `replicas`: a list the replica layers' names are appended to. Returns
    (expanded net, notes)."""
    both = sorted({name for name, _ in plan.widen} & {name for name, _ in plan.replicate})
    if both:
        raise ConfigError("--widen %s and --replicate %s: a layer is either widened or replicated; give one of "
                          "them" % (both[0], both[0]))
    if plan.dropin and (plan.replicate or plan.widen) and plan.length is None:
        raise ConfigError("gradual DropIn needs --dropin-length L, the iterations a new layer takes to enter (an "
                          "integer >= 1, e.g. 1000); or pass --no-dropin for the plain expanded net")
    if plan.dropin and (plan.replicate or plan.widen) and (not isinstance(plan.length, int) or plan.length < 1):
        raise ConfigError("--dropin-length L must be an integer >= 1 (iterations for new layers to enter), "
                          "got %s; or pass --no-dropin for the plain expanded net" % (plan.length,))
    if plan.stagger < 0:
        raise ConfigError("--stagger must be an integer >= 0, got %d" % plan.stagger)
    net, shapes, notes = net.copy(), dict(shapes), []
    filler = rewrite.gaussian_filler(plan.replica_std) if plan.replica_std is not None else None
    dropin = {"length": plan.length, "iter_size": iter_size} if plan.dropin else None
    if dropin is not None and plan.train != "select":
        dropin["train"] = plan.train
    for name, width in plan.widen:
        rewrite.widen(net, name, width, dropin, shapes, p_top=plan.p_top, notices=notes)
        shapes = dict(inference.infer(net, "TRAIN", input_shapes, notes=[])[0])
    for name, count in plan.replicate:
        rewrite.replicate(net, name, count, dropin=dropin, p_top=plan.p_top, activation=plan.activation,
                          kernel=plan.kernel, filler=filler, names=plan.names.get(name), shapes=shapes,
                          notices=notes, replicas=replicas)
    for name, value in plan.regularize:
        p_new, prev = value if isinstance(value, tuple) else (value, None)
        rewrite.regularize(net, name, p_new, shapes, iter_size=iter_size, p_top=plan.p_top, notices=notes,
                           prev=prev)
    if plan.length_growth != 1:
        if not plan.dropin:
            raise ConfigError("--length-growth tailors DropIn lengths; it needs DropIn (drop --no-dropin)")
        gradual = [c for _, c in rewrite.dropin_configs(net) if c.get("mode", "gradual") == "gradual"]
        check_length_growth(plan.length_growth, plan.length, len(gradual))
        rewrite.tailor_lengths(net, plan.length, plan.length_growth)
    if plan.stagger:
        rewrite.stagger(net, plan.stagger)
    if plan.native:
        rewrite.to_native(net)
    return net, notes
