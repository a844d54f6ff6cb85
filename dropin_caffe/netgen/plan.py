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

from ..errors import ConfigError
from . import rewrite
from . import shapes as inference


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
    dropin_seed: typing.Optional[int] = None
    identity: bool = False

    @property
    def rewrites(self):
        return bool(self.replicate or self.regularize or self.widen)

    @property
    def suffix(self):
        """The output files' suffix: _dropin, _plain (no DropIn) or none (nothing rewritten)."""
        if not self.rewrites:
            return ""
        return "dropin" if self.dropin or self.regularize else "plain"

    def check(self):
        """The rules between the fields (each field's own rule is checked by its option)."""
        grows = self.replicate or self.widen
        if self.dropin and grows and self.length is None:
            raise ConfigError("gradual DropIn needs --dropin-length L, the iterations a new layer takes to enter (an "
                              "integer >= 1, e.g. 1000); or pass --no-dropin for the plain expanded net")
        if self.length_growth != 1:
            if not self.dropin:
                raise ConfigError("--length-growth tailors DropIn lengths; it needs DropIn (drop --no-dropin)")
            check_length_growth(self.length_growth, self.length,
                                sum(count for _, count in self.replicate) + len(self.widen))
        if self.identity and not self.replicate:
            raise ConfigError("--replica-init identity starts replicas; give --replicate LAYER=K (or a preset)")

    def joins(self, net, iter_size=1):
        """{(layer, k): the param_str config of the k-th DropIn the plan puts after `layer`}, every
        one complete before the net is rewritten. The joins are counted in the order of their layers
        in `net` (a replicated layer's in replica order): gradual join i starts at i * stagger with
        length round(L * G**i) (at least 1); join j of all is seeded dropin_seed * 1000 + j."""
        order = {layer.get("name"): i for i, layer in enumerate(net.get_all("layer"))}
        joins = [(name, k) for name, count in self.replicate for k in range(count)] + [(n, 0) for n, _ in self.widen]
        joins = joins if self.dropin else []
        joins += [(name, 0) for name, _ in self.regularize]
        regularized = dict(self.regularize)
        configs, gradual = {}, 0
        for index, (name, k) in enumerate(sorted(joins, key=lambda join: (order.get(join[0], len(order)), join[1]))):
            if name in regularized:
                config = {"mode": "regularize", "p_new": regularized[name][0], "iter_size": iter_size}
            else:
                config = {"length": max(1, int(round(self.length * self.length_growth ** gradual))),
                          "iter_size": iter_size}
                if self.train != "select":
                    config["train"] = self.train
                if self.stagger:
                    config["start"] = gradual * self.stagger
                gradual += 1
            if self.dropin_seed is not None:
                config["seed"] = self.dropin_seed * 1000 + index
            configs[name, k] = config
        return configs


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
    if depth is not None:  # checked by its option (an integer >= 1, lenet-deep only)
        plan.replicate = [("conv2", depth)]
    if width is not None:
        plan.widths = {"conv2": width}
    return preset.template, plan


def set_widths(net, widths):
    """`net` with the num_output of each layer in `widths` {layer: C} set to C (in place)."""
    for name, channels in widths.items():
        layer = rewrite.find_layer(net, name, "--width")
        param = layer.get("convolution_param") or layer.get("inner_product_param")
        if param is None:
            raise ConfigError("--width: %s is a %s layer; it needs a Convolution or InnerProduct"
                              % (name, layer.get("type")))
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


def apply_plan(net, plan, iter_size=1, input_shapes=None):
    """Apply `plan` to a copy of `net` (already upgraded); returns (expanded net, notes, the names of
    the replica layers). Each rewrite reads the shapes it needs from the net as it is then
    (`shapes.infer` with `input_shapes`, again after each rewrite: a few milliseconds a net)."""
    plan.check()
    net, notes, replicas = net.copy(), [], []
    joins = plan.joins(net, iter_size)
    filler = rewrite.gaussian_filler(plan.replica_std) if plan.replica_std is not None else None

    def inferred():
        return inference.infer(net, "TRAIN", input_shapes, notes=[])

    for name, width in plan.widen:
        rewrite.widen(net, name, width, joins.get((name, 0)), inferred(), p_top=plan.p_top, notices=notes)
    for name, count in plan.replicate:
        dropins = [joins[name, k] for k in range(count)] if plan.dropin else None
        replicas += rewrite.replicate(net, name, count, dropins, inferred(), p_top=plan.p_top,
                                      activation=plan.activation, kernel=plan.kernel, filler=filler,
                                      names=plan.names.get(name), notices=notes).replicas
    for name, (_, prev) in plan.regularize:
        rewrite.regularize(net, name, joins[name, 0], inferred(), p_top=plan.p_top, notices=notes, prev=prev)
    if plan.native:
        rewrite.to_native(net)
    return net, notes, replicas
