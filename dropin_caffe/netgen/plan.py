"""A Plan of rewrites for a net, and our presets after the paper's expanded nets.

A Plan names what to rewrite (`replicate`, `regularize`) and how (DropIn length, stagger, ...);
`apply_plan` applies it to a current-format net. The presets are our versions of the expanded
nets of Smith, Hand & Doster (2015), built from the stock templates by the same code. Where the
paper is silent they are our choice: the replicated layers, replica kernels, gaussian std 0.01 of
lenet-deep's added layers, the default depth and the default DropIn lengths.
"""
import collections
import dataclasses
import typing

from . import rewrite
from ..errors import ConfigError


@dataclasses.dataclass
class Plan:
    """What expand_net does to a net. Counts and names per replicated layer, P (or P and the
    blob prev comes from) per Dropout."""
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
    native: bool = False
    train: str = "select"

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
                         "after the paper's MNIST experiments (LeNet with extra conv layers)",
                         "LeNet plus N (--depth, default 5) 3x3 conv+ReLU layers after conv2 that keep its "
                         "50x8x8 shape, their weights gaussian std 0.01 (our choice; LeNet's own: xavier)"),
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


def apply_plan(net, plan, shapes, iter_size=1, replicas=None):
    """Apply `plan` to a copy of `net` (already upgraded). `shapes` are the TRAIN shapes of `net`
    (`shapes.infer`); the rewrites add the shapes of the blobs they make, so the net is inferred
    once, not once per rewrite. `replicas`: a list the replica layers' names are appended to.
    Returns (expanded net, notes)."""
    if plan.dropin and plan.replicate and (not isinstance(plan.length, int) or plan.length < 1):
        raise ConfigError("--dropin-length L must be an integer >= 1 (iterations for new layers to enter), "
                          "got %s; or pass --no-dropin for the plain expanded net" % (plan.length,))
    if plan.stagger < 0:
        raise ConfigError("--stagger must be an integer >= 0, got %d" % plan.stagger)
    net, shapes, notes = net.copy(), dict(shapes), []
    filler = rewrite.gaussian_filler(plan.replica_std) if plan.replica_std is not None else None
    dropin = {"length": plan.length, "iter_size": iter_size} if plan.dropin else None
    if dropin is not None and plan.train != "select":
        dropin["train"] = plan.train
    for name, count in plan.replicate:
        rewrite.replicate(net, name, count, dropin=dropin, p_top=plan.p_top, activation=plan.activation,
                          kernel=plan.kernel, filler=filler, names=plan.names.get(name), shapes=shapes,
                          notices=notes, replicas=replicas)
    for name, value in plan.regularize:
        p_new, prev = value if isinstance(value, tuple) else (value, None)
        rewrite.regularize(net, name, p_new, shapes, iter_size=iter_size, p_top=plan.p_top, notices=notes,
                           prev=prev)
    if plan.stagger:
        rewrite.stagger(net, plan.stagger)
    if plan.native:
        rewrite.to_native(net)
    return net, notes
