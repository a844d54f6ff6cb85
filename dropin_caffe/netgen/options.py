"""expand_net's options, declared once: one table (`OPTIONS`) gives the command line its flags and
the library its keywords (a flag's keyword is its name: `--input-shape` is `input_shape`), and
`Options.from_keywords` checks them, each rule with one wording, before any net is read.

Adding a rewrite: a function in `rewrite`, a field of `plan.Plan` and its step in `apply_plan`,
and a row here (see docs/architecture.md).
"""
import dataclasses
import difflib
import math
import os
import typing

from ..errors import ConfigError
from . import plan as plans
from . import templates


@dataclasses.dataclass(frozen=True)
class Option:
    """One expand_net option: its keyword, the group its flag is listed under, its help, the
    argparse settings of its flag (`cli`: type, metavar, choices, action), and `check(value)`, which
    returns the value the library uses or raises ConfigError. `pairs` = (convert, form): the flag
    is repeated as NAME=VALUE, VALUE read by `convert` (ValueError if malformed; `form` says what
    is expected). `flag` is the command-line name when it is not "--" + keyword with dashes (the
    --no-X flags of keywords that default to True)."""
    keyword: str
    group: str
    help: str
    cli: dict = dataclasses.field(default_factory=dict)
    check: typing.Callable = None
    default: typing.Any = None
    flag: typing.Optional[str] = None
    pairs: typing.Optional[tuple] = None

    @property
    def flags(self):
        return [self.flag or "--" + self.keyword.replace("_", "-")]


def _integer(option, least, meaning="", fix=""):
    """A check that an optional value is an integer >= `least` (None passes: the option is not given)."""
    def check(value):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < least):
            raise ConfigError("%s must be an integer >= %d%s, got %s%s" % (option, least, meaning, _shown(value), fix))
        return value
    return check


def _positive_number(option, meaning, example):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise ConfigError("%s %s must be a finite number > 0 (%s), got %s"
                              % (option, meaning, example, _shown(value)))
        return value
    return check


def _choice(option, choices, what=""):
    def check(value):
        if value not in choices:
            allowed = " or ".join('"%s"' % choice for choice in choices)
            raise ConfigError("%s must be %s%s, got %r" % (option, allowed, what, value))
        return value
    return check


def _shown(value):
    return repr(value) if isinstance(value, str) else str(value)


def pairs(value, option):
    """A dict (or list of (name, value) pairs) as a list of pairs, each name once."""
    if value is None:
        return []
    found = list(value.items()) if isinstance(value, dict) else list(value)
    names = [name for name, _ in found]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError("%s %s is given twice; give each layer once" % (option, twice[0]))
    return found


def _counts(option, least, rule):
    """A check of LAYER=N pairs whose N must be an integer >= `least` (`rule` says so in the error)."""
    def check(value):
        found = pairs(value, option)
        for name, count in found:
            if isinstance(count, bool) or not isinstance(count, int) or count < least:
                raise ConfigError("%s %s=%s: %s" % (option, name, count, rule))
        return found
    return check


def _regularize(value):
    found = []
    for name, given in pairs(value, "--regularize"):
        p_new, prev = given if isinstance(given, tuple) and len(given) == 2 else (given, None)
        if isinstance(p_new, bool) or not isinstance(p_new, (int, float)) or not 0 < p_new <= 1:
            raise ConfigError("--regularize %s=%s: P, the probability a unit comes from new, must lie in (0, 1]"
                              % (name, p_new))
        if prev is not None and (not isinstance(prev, str) or not prev):
            raise ConfigError("--regularize %s=%s:%s: BLOB, the blob prev is taken from, must be a blob name"
                              % (name, p_new, prev))
        found.append((name, (p_new, prev)))
    return found


def _shapes(value):
    found = dict(pairs(value, "--input-shape"))
    for blob, shape in found.items():
        if not isinstance(shape, (tuple, list)) or len(shape) not in (3, 4) or \
                any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in shape):
            raise ConfigError("--input-shape %s: the shape must be C,H,W or N,C,H,W with integers >= 1, got %s"
                              % (blob, _shown(shape)))
    return {blob: tuple(shape) for blob, shape in found.items()}


def _settings(value):
    return {name: templates.parse_value(text) if isinstance(text, str) else text
            for name, text in dict(pairs(value, "--set")).items()}


def _kept(value):
    return value


def _p_and_prev(text):
    """P, or (P, BLOB) for P:BLOB."""
    p_new, sep, prev = text.partition(":")
    if sep and not prev:
        raise ValueError(text)
    return (float(p_new), prev) if sep else float(p_new)


def _shape(text):
    """C,H,W or N,C,H,W as a tuple of ints."""
    return tuple(int(d) for d in text.split(","))


def _existing_file(option):
    def check(value):
        if value is not None and (not isinstance(value, str) or not os.path.isfile(value)):
            raise ConfigError("%s must be an existing file, got %s; give the path of a .caffemodel"
                              % (option, _shown(value)))
        return value
    return check


SOURCE, REWRITES, OUTPUT = "source", "rewrites", "solver and output"

# Every keyword of expand_net, in the order --help lists them. The first three are the source,
# exactly one of which is given.
OPTIONS = [
    Option("net", SOURCE, "the net prototxt (current or old V1 format)", {"nargs": "?"}, _kept),
    Option("template", SOURCE, "a built-in stock net: lenet, cifar10_quick, cifar10_full, alexnet, vgg11, vgg16",
           {"metavar": "NAME"}, _kept),
    Option("preset", SOURCE, "one of our presets after the paper's expanded nets: %s" % ", ".join(plans.PRESETS),
           {"metavar": "NAME", "choices": sorted(plans.PRESETS)}, _kept),
    Option("replicate", REWRITES, "insert K replicas of LAYER after it, each entering by gradual DropIn",
           {"metavar": "LAYER=K"}, _counts("--replicate", 1, "K, the number of replicas, must be >= 1"),
           pairs=(int, "LAYER=K with an integer K")),
    Option("regularize", REWRITES, "replace Dropout LAYER by a regularizing DropIn taking units from new with "
           "probability P, else from prev: BLOB, or by default the nearest blob before LAYER's input that every "
           "path from the inputs passes through",
           {"metavar": "LAYER=P[:BLOB]"}, _regularize, pairs=(_p_and_prev, "LAYER=P or LAYER=P:BLOB with a number P")),
    Option("widen", REWRITES, "grow conv or fc LAYER to C2 outputs: an extra layer computes the new units, which "
           "enter by gradual DropIn while LAYER's own stay unchanged; LAYER's consumers get C2 inputs",
           {"metavar": "LAYER=C2"},
           _counts("--widen", 2, "C2, the number of outputs to grow to, must be an integer above the layer's "
                   "num_output"), pairs=(int, "LAYER=C2 with an integer C2")),
    Option("dropin_length", REWRITES, "iterations for a new layer to enter; required with --replicate and "
           "--widen unless --no-dropin", {"type": int, "metavar": "L"},
           _integer("--dropin-length L", 1, " (the iterations a new layer takes to enter)",
                    "; or pass --no-dropin for the plain expanded net")),
    Option("stagger", REWRITES, "DropIn layer i starts entering at i*S", {"type": int, "metavar": "S"},
           lambda v: 0 if v is None else _integer("--stagger", 0)(v)),
    Option("length_growth", REWRITES, "tailored lengths: DropIn layer i gets length round(L * G**i) (default 1: "
           "all L)", {"type": float, "metavar": "G"},
           lambda v: 1.0 if v is None else _positive_number("--length-growth G,", "the factor between consecutive "
                                                            "DropIn lengths,", "1 keeps one length")(v)),
    Option("dropin", REWRITES, "the plain expanded baseline: same replicas, no DropIn",
           {"action": "store_false"}, bool, True, "--no-dropin"),
    Option("dropin_train", REWRITES, "how gradual DropIn layers train: select (default, each unit drawn from new "
           "with probability p) or blend (p new + (1 - p) prev, a deterministic fade-in; our addition)",
           {"choices": ["select", "blend"]},
           lambda v: "select" if v is None else _choice("--dropin-train", ("select", "blend"))(v)),
    Option("dropin_seed", REWRITES, "seed the DropIn layers' masks: DropIn i (in net order) gets seed S*1000+i "
           "(default: unseeded, a fresh draw each run)", {"type": int, "metavar": "S"},
           _integer("--dropin-seed", 0)),
    Option("p_top", REWRITES, "DropIn layers output p so Caffe's log shows it", {"action": "store_true"}, bool, False),
    Option("add_activation", REWRITES, "give replicas a ReLU where the original has no activation",
           {"choices": ["relu"]}, lambda v: v if v is None else _choice("--add-activation", ("relu",))(v)),
    Option("replica_kernel", REWRITES, "kernel size of conv replicas (odd)", {"type": int, "metavar": "K"},
           _integer("--replica-kernel", 1)),
    Option("replica_std", REWRITES, "replicas' weights from gaussian(STD)", {"type": float, "metavar": "STD"},
           # Caffe's gaussian filler CHECKs sigma > 0 and aborts the whole process; nan passes that
           # check and fills the weights with nan. Refused here, before any net is written.
           lambda v: v if v is None else _positive_number("--replica-std STD,", "the std of the replicas' gaussian "
                                                          "weights,", "e.g. 0.01")(v)),
    Option("replica_init", REWRITES, "identity: each replica starts as the identity map (centre tap 1 on its own "
           "channel, bias 0), written as NET_init.caffemodel for caffe train --weights", {"choices": ["identity"]},
           lambda v: v if v is None else _choice("--replica-init", ("identity",),
                                                 " (or left out for the replicas' fillers)")(v)),
    Option("native", REWRITES, "emit the native C++ layer types (DropIn, DropInResize; built on first use) instead "
           "of Python layers", {"action": "store_true"}, bool, False),
    Option("depth", REWRITES, "lenet-deep: how many conv layers to add", {"type": int, "metavar": "N"},
           _integer("--depth", 1)),
    Option("width", REWRITES, "lenet-deep: channels of conv2 and the added layers (default 50)",
           {"type": int, "metavar": "C"},
           _integer("--width", 1, " (channels of conv2 and the added layers)")),
    Option("input_shape", REWRITES, "shape of a data layer's top (C,H,W: one image, the batch is the layer's own, "
           "else 1) whose shape lives in its database, of a Python or fork data layer's, or of an unknown layer's; "
           "for an Input layer, shapes and drawings use it while the emitted net keeps its declaration",
           {"metavar": "BLOB=C,H,W"}, _shapes, pairs=(_shape, "BLOB=C,H,W (or N,C,H,W) with integers")),
    Option("solver", OUTPUT, "the original solver prototxt; emits the matching one", {"metavar": "SOLVER"}, _kept),
    Option("max_iter", OUTPUT, "the emitted solver's max_iter", {"type": int},
           _integer("--max-iter", 1)),
    Option("solver_mode", OUTPUT, "the emitted solver's solver_mode", {"choices": ["CPU", "GPU"]},
           lambda v: v if v is None else _choice("--solver-mode", ("CPU", "GPU"))(v)),
    Option("settings", OUTPUT, "a template variable (data source, batch size, ...)",
           {"metavar": "VAR=VALUE"}, _settings, None, "--set", (str, "VAR=VALUE")),
    Option("weights", OUTPUT, "a trained .caffemodel of the net: writes NET_dropin_init.caffemodel (its layers' "
           "trained blobs, the replicas' start, DropIn counters at 0) and proves in Caffe that the expanded net "
           "starts as the trained one", {"metavar": "TRAINED.caffemodel"}, _existing_file("--weights")),
    Option("validate", OUTPUT, "skip the caffe_pb2 and caffe.Net checks", {"action": "store_false"}, bool, True,
           "--no-validate"),
]
BY_KEYWORD = {option.keyword: option for option in OPTIONS}


class Options:
    """Every expand_net keyword, checked: an attribute for each keyword of `OPTIONS`."""

    def __init__(self, values):
        self.__dict__.update(values)

    @classmethod
    def from_keywords(cls, **keywords):
        """Check `keywords` (expand_net's) one by one and together; ConfigError on the first problem."""
        unknown = sorted(set(keywords) - set(BY_KEYWORD))
        if unknown:
            near = difflib.get_close_matches(unknown[0], list(BY_KEYWORD), n=1)
            raise ConfigError("expand_net has no keyword %r%s; its keywords are the command line's flags: %s"
                              % (unknown[0], "; did you mean %r?" % near[0] if near else "", ", ".join(BY_KEYWORD)))
        values = {option.keyword: option.check(keywords.get(option.keyword, option.default)) for option in OPTIONS}
        options = cls(values)
        options._check_together()
        return options

    def _check_together(self):
        given = [k for k in ("net", "template", "preset") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ConfigError("give exactly one of a net, a template or a preset, got %s"
                              % (", ".join(given) or "none"))
        if self.preset != "lenet-deep" and (self.depth is not None or self.width is not None):
            raise ConfigError("%s applies to the lenet-deep preset only" % ("--depth" if self.depth is not None
                                                                            else "--width"))
        if self.net is not None and self.solver is None and (self.max_iter is not None or self.solver_mode is not None):
            raise ConfigError("--max-iter and --solver-mode set the emitted solver; give it with --solver")
        if self.net is None and self.solver is not None:
            raise ConfigError("--solver goes with a net file; a template or preset brings its own solver")
        if self.net is not None and self.settings:
            raise ConfigError("--set gives template variables; it needs --template or --preset")
        both = sorted({name for name, _ in self.widen} & {name for name, _ in self.replicate})
        if both:
            raise ConfigError("--widen %s and --replicate %s: a layer is either widened or replicated; give one of "
                              "them" % (both[0], both[0]))
        if self.dropin_train == "blend" and not self.dropin:
            raise ConfigError("--dropin-train blend sets how DropIn layers train, but --no-dropin emits none; "
                              "drop one of the two")

    def plan(self):
        """The template (None for a net file) and the Plan of rewrites: the preset's, with the options' added."""
        template, plan = self.template, plans.Plan()
        if self.preset is not None:
            template, plan = plans.preset_plan(self.preset, self.depth, self.width)
        plan.replicate += self.replicate
        plan.regularize += self.regularize
        plan.widen += self.widen
        for field in ("stagger", "length_growth", "native", "dropin_seed"):
            setattr(plan, field, getattr(self, field))
        plan.length = self.dropin_length if self.dropin_length is not None else plan.length
        plan.dropin = plan.dropin and self.dropin
        plan.p_top = plan.p_top or self.p_top
        plan.train = self.dropin_train
        plan.activation = "ReLU" if self.add_activation else plan.activation
        plan.kernel = self.replica_kernel if self.replica_kernel is not None else plan.kernel
        plan.replica_std = self.replica_std if self.replica_std is not None else plan.replica_std
        plan.identity = self.replica_init == "identity"
        if self.net is not None and not plan.rewrites:
            from .reader import is_inline
            raise ConfigError("nothing to rewrite in %s: give --replicate LAYER=K, --regularize LAYER=P or --widen "
                              "LAYER=C2" % (self.net if not is_inline(self.net) else "the net"))
        return template, plan
