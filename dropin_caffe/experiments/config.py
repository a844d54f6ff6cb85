"""What an experiment is: configurations x seeds on a dataset, built in or from a JSON file.

A configuration is a name and the arguments expand_net takes (a template, preset or net file and its
rewrite options), so any net the command line can build can be an experiment, the user's included.
An experiment adds the dataset, the iterations, the test interval and the seeds. Built-in ones
are our choices after the experiments of Smith, Hand & Doster (2015): the datasets, sizes, batch
sizes, iteration counts, depths, DropIn lengths and inits are ours where the paper gives no
numbers. A user's own is a JSON file of the same fields::

    {"name": "mine", "dataset": "mnist", "train_count": 4000, "test_count": 1000,
     "iterations": 2000, "test_interval": 200, "seeds": [1, 2],
     "configurations": {"plain": ["--preset", "lenet-deep", "--no-dropin"],
                        "DropIn": ["--preset", "lenet-deep", "--dropin-length", "500"]}}

A configuration is a list of expand_net arguments, or an object that also chains it after another
configuration of the same experiment (weight transfer: a shallow net trained, then a deeper one
started from its final weights)::

    "configurations": {
        "LeNet, 600 its": {"arguments": ["--template", "lenet"], "iterations": 600},
        "transfer": {"arguments": ["--preset", "lenet-deep", "--no-dropin"], "after": "LeNet, 600 its",
                     "iterations": 1400}}

"arguments": the expand_net arguments; "iterations" (optional): this configuration's own
iterations instead of the experiment's (`--iterations` changes the experiment's only); "after"
(optional): each seed of this configuration starts with `caffe train --weights=` the final
weights (snapshot_iter_N.caffemodel) of the same seed of that configuration, so it runs after it.
Caffe copies the layers whose names match and leaves the others to their fillers; the plots
then count the iterations of the whole chain. A net written with `--replica-init identity` also
loads its initial weights (after the chained ones: `--weights=SHALLOW,INIT`).

"solver" (optional) changes fields of every run's solver, e.g. a fixed learning rate without
weight decay, where overfitting is the point: {"lr_policy": "fixed", "weight_decay": 0}. The
fields the runner sets itself (net, max_iter, test and snapshot settings, seed, mode) are refused.

"panels" (optional) splits the plot of an experiment of many configurations: one accuracy and
one loss panel per prefix of the configuration names, e.g. ["depth 30", "depth 50"] for
configurations "depth 30, plain", "depth 50, plain", ...
"""
import dataclasses
import json
import os
import re
import typing

from ..errors import ConfigError, clip


@dataclasses.dataclass
class Stage:
    """One configuration as the runner trains it: its expand_net arguments, its iterations, the
    configuration whose final weights it starts from (or None), and the iterations before it in
    its chain (the x offset of its curves)."""
    arguments: typing.List[str]
    iterations: int
    after: typing.Optional[str] = None
    offset: int = 0


@dataclasses.dataclass
class Experiment:
    name: str
    dataset: str
    iterations: int
    test_interval: int
    seeds: typing.List[int]
    configurations: typing.Dict[str, typing.List[str]]
    train_count: typing.Optional[int] = None
    test_count: typing.Optional[int] = None
    description: str = ""
    solver: typing.Optional[typing.Dict[str, typing.Union[int, float, str]]] = None
    panels: typing.Optional[typing.List[str]] = None

    def panel(self, prefix):
        """{name without the prefix: name} of the configurations in panel `prefix` (a whole word:
        "depth 10" is not a prefix of "depth 100, plain")."""
        return {name[len(prefix):].lstrip(", ") or name: name for name in self.configurations
                if name.startswith(prefix) and not name[len(prefix):len(prefix) + 1].isalnum()}

    def stage(self, name):
        """The `Stage` of configuration `name` (its chain checked by `check_chains`)."""
        value = self.configurations[name]
        if isinstance(value, list):
            return Stage(list(value), self.iterations)
        after = value.get("after")
        iterations = value.get("iterations", self.iterations)
        offset = 0 if after is None else self.stage(after).offset + self.stage(after).iterations
        return Stage(list(value["arguments"]), iterations, after, offset)

    def ordered(self):
        """The configuration names with every one after the one it starts from (else as given)."""
        done = []
        for name in self.configurations:
            chain = []
            while name is not None and name not in done and name not in chain:
                chain.append(name)
                value = self.configurations[name]
                name = value.get("after") if isinstance(value, dict) else None
            done += reversed(chain)
        return done


LENET_DEEP = ["--preset", "lenet-deep", "--p-top"]
SMALL_BATCH = ["--set", "train_batch_size=32"]
SMALL_LENET = ["--template", "lenet", "--set", "train_batch_size=16"]
THIN_LENET = ["--template", "lenet", "--set", "widths=[10,25,250]"]
WIDEN_LENET = THIN_LENET + ["--widen", "conv1=20", "--widen", "conv2=50", "--widen", "ip1=500", "--p-top"]


def _widen(name, dataset, seeds):
    """Thin LeNet grown to Caffe's widths by --widen, against both widths trained as they are."""
    return Experiment(
        name, dataset, 2000, 200, seeds, {
            "LeNet (20, 50, 500)": ["--template", "lenet"],
            "thin LeNet (10, 25, 250)": THIN_LENET,
            "thin LeNet widened to (20, 50, 500), DropIn L=1000": WIDEN_LENET + ["--dropin-length", "1000"],
        }, None, 1000,
        "LeNet started thin (conv1 10, conv2 25, ip1 250 outputs) and grown to Caffe's widths (20, 50, 500) by "
        "--widen, its extra units entering by gradual DropIn over L = 1000 of 2000 iterations, against Caffe's "
        "LeNet and the thin LeNet trained as they are: does growing cost accuracy, or time to accuracy? The paper "
        "names starting thin and adding units during training as future work; the widths, L and iterations are "
        "our choice.")

DEEP = LENET_DEEP + ["--depth", "100", "--width", "16"]
DEEP_METHODS = {
    "plain, std 0.01": ["--no-dropin"],
    "plain, std 0.118": ["--no-dropin", "--replica-std", "0.118"],
    "plain, identity": ["--no-dropin", "--replica-init", "identity"],
    **{"DropIn in turn, " + start: ["--native", "--dropin-length", "20", "--stagger", "20"] + init
       for start, init in (("std 0.01", []), ("std 0.118", ["--replica-std", "0.118"]),
                           ("identity", ["--replica-init", "identity"]))},
}

BUILTIN = {
    "lenet-deep": Experiment(
        "lenet-deep", "mnist", 2000, 200, [1, 2, 3], {
            "LeNet": ["--template", "lenet"],
            "LeNet-deep (5 extra conv), plain": LENET_DEEP + ["--no-dropin"],
            "LeNet-deep, DropIn L=500": LENET_DEEP + ["--dropin-length", "500"],
            "LeNet-deep, DropIn L=1000": LENET_DEEP + ["--dropin-length", "1000"],
        }, None, 1000,
        "A LeNet with 5 extra 3x3 conv+ReLU layers (gaussian std 0.01 fillers, our choice) does not train plainly; "
        "with its extra layers entering by gradual DropIn it does."),
    "lenet-init": Experiment(
        "lenet-init", "mnist", 2000, 200, [1, 2, 3], {
            "LeNet-deep plain, added layers gaussian 0.01": LENET_DEEP + ["--no-dropin"],
            "LeNet-deep plain, added layers xavier": [
                "--template", "lenet", "--replicate", "conv2=5", "--replica-kernel", "3", "--add-activation", "relu",
                "--no-dropin"],
        }, None, 1000,
        "The same plain deep LeNet with its added layers started from gaussian std 0.01 (our choice) or "
        "from xavier: the init is part of the claim."),
    "lenet-depth": Experiment(
        "lenet-depth", "mnist", 2000, 200, [1, 2, 3], {
            "depth %d, DropIn L=1000" % n: LENET_DEEP + ["--depth", str(n), "--dropin-length", "1000", "--native"]
            for n in (5, 10, 15)}, None, 1000,
        "LeNet-deep with 5, 10 and 15 extra 3x3 conv+ReLU layers (gaussian std 0.01, our choice), all entering "
        "together by gradual DropIn over L = 1000 of 2000 iterations (native layers, for speed; the depths, L and "
        "iterations are ours, sized to about 40 minutes on 2 cores: caffe time gives 0.15 and 0.37 s an iteration "
        "at depths 5 and 15 on one core)."),
    "length": Experiment(
        "length", "mnist", 2000, 200, [1, 2, 3], {
            "DropIn L=%d" % length: LENET_DEEP + ["--dropin-length", str(length)] for length in (100, 500, 1000, 2000)},
        None, 1000,
        "LeNet-deep (5 extra conv layers, gaussian std 0.01, our choice) with DropIn lengths L = 100, 500, 1000 "
        "and 2000 over 2000 iterations (the paper reports shorter lengths marginally better on MNIST; the "
        "lengths and iterations are ours)."),
    "deep": Experiment(
        "deep", "mnist", 1500, 150, [1], {
            "depth 100, plain": DEEP + ["--no-dropin"],
            "depth 100, DropIn together L=600": DEEP + ["--native", "--dropin-length", "600"],
            "depth 100, DropIn staggered S=6 L=600": DEEP + ["--native", "--dropin-length", "600", "--stagger", "6"],
            "depth 100, DropIn staggered S=6 L=300*1.007^i": DEEP + ["--native", "--dropin-length", "300",
                                                                      "--stagger", "6", "--length-growth", "1.007"],
        }, None, 1000,
        "LeNet with 100 added 3x3 conv+ReLU layers of 16 channels (conv2 too), no "
        "shortcuts, added layers from gaussian std 0.01, one seed per configuration, trained plainly, with all "
        "100 DropIns entering together (L = 600), staggered (layer i from iteration 6i, L = 600: the last "
        "starts at 594 and is in at 1194), and staggered with tailored lengths (layer i: 300 * 1.007^i, 300 to "
        "600, also in at about 1194), 1500 iterations. The paper names networks of hundreds of layers with DropIn "
        "layers entering at different iterations and tailored DropIn lengths per layer as future work; the depth, "
        "width, lengths, stagger, iterations and single seed are our choice, sized for about 30 minutes on "
        "2 cores (0.56 s an iteration on one core at batch 64, measured with caffe time)."),
    "deep-50": Experiment(
        "deep-50", "mnist", 1500, 150, [1], {
            "depth 50, DropIn staggered S=12 L=600": LENET_DEEP + ["--depth", "50", "--width", "16", "--native",
                                                                   "--dropin-length", "600", "--stagger", "12"],
        }, None, 1000,
        "deep at half the depth: LeNet with 50 added 3x3 conv+ReLU layers of 16 channels, no shortcuts, gaussian "
        "std 0.01, staggered DropIn (layer i from iteration 12i, L = 600: the last is in at 1188), 1500 "
        "iterations, one seed (our choice)."),
    "deep-depths": Experiment(
        "deep-depths", "mnist", 3000, 250, [1, 2], {
            "depth %d, %s" % (depth, method): LENET_DEEP + ["--depth", str(depth), "--width", "16",
                                                          "--set", "train_batch_size=16"] + arguments
            for depth in (100, 50, 30) for method, arguments in DEEP_METHODS.items()
        }, None, 1000,
        "Which methods train 30, 50 and 100 added 3x3 conv+ReLU layers of 16 channels (LeNet, no shortcuts): "
        "plain from gaussian std 0.01, from std 0.118 (msra for fan-in 144) and from the identity, against "
        "DropIn with each layer in before the next starts (L = 20, stagger 20: at depth 100 the last is in at "
        "2,000 of 3,000 iterations) from the same three starts. The paper names networks of hundreds of layers "
        "with DropIn layers entering at different iterations as future work; the methods, inits, batch 16, "
        "base_lr 0.003, L, stagger, iterations and 2 seeds are our choice, sized for about an hour on 2 cores "
        "(caffe time: 38, 57 and 112 ms an iteration at depths 30, 50 and 100, one core, native layers).",
        {"base_lr": 0.003}, ["depth 30", "depth 50", "depth 100"]),
    "fashion-cifar11": Experiment(
        "fashion-cifar11", "fashion_mnist", 1500, 150, [1, 2, 3], {
            "CIFAR-10 quick (3 conv)": ["--template", "cifar10_quick"] + SMALL_BATCH,
            "cifar10-11 (9 conv + 2 fc), plain": ["--preset", "cifar10-11", "--no-dropin"] + SMALL_BATCH,
            "cifar10-11, DropIn L=500": ["--preset", "cifar10-11", "--dropin-length", "500", "--p-top"] + SMALL_BATCH,
        }, 10000, 2000,
        "The CIFAR-10 quick net and its 11-weight-layer expansion, plain and with DropIn, on Fashion-MNIST "
        "(the proxy we can ship; pass --dataset cifar10 with your CIFAR-10 batches). Batch 32: the expanded "
        "net's 5x5 convs at full resolution cost about 0.5 s an iteration on 2 cores."),
    "regularize": Experiment(
        "regularize", "mnist", 2000, 200, [1, 2, 3], {
            "LeNet": ["--template", "lenet"],
            "LeNet + Dropout 0.5 before ip2": ["--template", "lenet", "--set", "dropout_ratio=0.5"],
            "LeNet + regularizing DropIn p_new 0.5 before ip2": [
                "--template", "lenet", "--set", "dropout_ratio=0.5", "--regularize", "drop1=0.5"],
        }, 4000, 1000,
        "Regularizing DropIn in the place of a Dropout layer, against that Dropout and against neither "
        "(4000 training images, where regularizing can matter)."),
    "regularize-long": Experiment(
        "regularize-long", "mnist", 5000, 250, [1, 2, 3], {
            "LeNet": SMALL_LENET,
            "LeNet + Dropout 0.5 before ip2": SMALL_LENET + ["--set", "dropout_ratio=0.5"],
            **{"LeNet + regularizing DropIn p_new %s before ip2" % p: SMALL_LENET + [
                "--set", "dropout_ratio=0.5", "--regularize", "drop1=%s" % p] for p in ("0.3", "0.5", "0.7")},
        }, 1000, 10000,
        "Regularizing DropIn in a regime meant to overfit: LeNet on 1,000 MNIST training images, batch "
        "16, 5,000 iterations (80 epochs), a fixed learning rate 0.01 without weight decay, tested on all 10,000 "
        "test images (our regime). Caution: in our pilots (docs/pilots/regularize-long.md) the plain net's test "
        "accuracy did not fall late in this regime, two others, or five on Fashion-MNIST with wider nets, so this "
        "comparison cannot show the claim.",
        {"lr_policy": "fixed", "weight_decay": 0}),
    "widen": _widen("widen", "mnist", [1, 2, 3]),
    "widen-fashion": _widen("widen-fashion", "fashion_mnist", [1]),
    "transfer": Experiment(
        "transfer", "mnist", 2000, 200, [1, 2, 3], {
            "LeNet-deep plain": LENET_DEEP + ["--no-dropin"],
            "LeNet-deep, DropIn L=500": LENET_DEEP + ["--dropin-length", "500"],
            "LeNet, first 500 its": {"arguments": ["--template", "lenet"], "iterations": 500},
            "transfer, then plain": {"arguments": LENET_DEEP + ["--no-dropin"], "after": "LeNet, first 500 its",
                                     "iterations": 1500},
            "transfer, then DropIn L=500": {"arguments": LENET_DEEP + ["--dropin-length", "500"],
                                            "after": "LeNet, first 500 its", "iterations": 1500},
            "LeNet-deep plain, identity init": LENET_DEEP + ["--no-dropin", "--replica-init", "identity"],
        }, None, 1000,
        "What a practitioner already knows against DropIn on LeNet-deep (5 extra 3x3 conv+ReLU layers after conv2, "
        "gaussian std 0.01, our choice): the plain deep net; DropIn L=500 from scratch; weight transfer in the "
        "manner of the VGG paper (Simonyan & Zisserman 2014): stock LeNet trained first, its weights loaded into "
        "the deep net, whose added layers then train plainly or enter by DropIn; and the added layers started as "
        "the identity map (Net2DeeperNet style) and trained plainly. Every configuration gets 2000 iterations in "
        "all, the 500 of the shallow stage included (our choice of split); the deep stage restarts the solver and "
        "its learning-rate schedule. The identity start is not exactly function-preserving here: conv2 has no "
        "ReLU, the added layers do, so the start computes relu(conv2)."),
    "fade": Experiment(
        "fade", "mnist", 2000, 200, [1, 2, 3], {
            "LeNet-deep, DropIn L=500, select": LENET_DEEP + ["--dropin-length", "500"],
            "LeNet-deep, DropIn L=500, blend": LENET_DEEP + ["--dropin-length", "500", "--dropin-train", "blend"],
        }, None, 1000,
        "Is the per-unit random select needed? LeNet-deep (gaussian std 0.01, our choice) with DropIn L=500, "
        "training either by the per-unit Bernoulli select or by a deterministic fade-in, p new + (1 - p) prev "
        "in training too (as progressive GANs grow; our addition, \"train\": \"blend\")."),
    "fade-cifar11": Experiment(
        "fade-cifar11", "fashion_mnist", 1500, 150, [1], {
            "cifar10-11, DropIn L=500, select": ["--preset", "cifar10-11", "--dropin-length", "500", "--p-top"]
            + SMALL_BATCH,
            "cifar10-11, DropIn L=500, blend": ["--preset", "cifar10-11", "--dropin-length", "500", "--p-top",
                                                "--dropin-train", "blend"] + SMALL_BATCH,
        }, 10000, 2000,
        "The fade question on the 11-weight-layer CIFAR-10 quick expansion on Fashion-MNIST, as fashion-cifar11 "
        "(one seed: an iteration costs about 0.5 s on 2 cores): per-unit select against the deterministic "
        "blend."),
}

FIELDS = {f.name for f in dataclasses.fields(Experiment)}


def load(name_or_path):
    """A built-in experiment by name, or a user's from a JSON file."""
    if name_or_path in BUILTIN:
        return dataclasses.replace(BUILTIN[name_or_path])
    if not os.path.exists(name_or_path):
        raise ConfigError("no built-in experiment %r and no such file; built-in: %s, or a JSON file "
                          "(see `run_experiments.py --help`)" % (name_or_path, ", ".join(BUILTIN)))
    try:
        with open(name_or_path) as f:
            given = json.load(f)
    except (OSError, ValueError) as error:
        raise ConfigError("%s: not a readable JSON experiment (%s)" % (name_or_path, error)) from None
    except RecursionError:
        # json recurses once per nesting level; an experiment nests three levels at most.
        raise ConfigError("%s: not a JSON experiment: it nests too deeply (an experiment is a flat object "
                          "whose \"configurations\" map names to lists of strings)" % name_or_path) from None
    if not isinstance(given, dict):
        raise ConfigError("%s: an experiment is a JSON object with keys %s" % (name_or_path, ", ".join(sorted(FIELDS))))
    unknown = sorted(set(given) - FIELDS)
    missing = sorted({"name", "dataset", "iterations", "test_interval", "seeds", "configurations"} - set(given))
    if unknown or missing:
        raise ConfigError("%s: %s%s" % (name_or_path, "unknown keys %s; " % unknown if unknown else "",
                                          "missing keys %s" % missing if missing
                                          else "known keys: %s" % sorted(FIELDS)))
    experiment = Experiment(**given)
    configurations = experiment.configurations
    if not (isinstance(configurations, dict) and configurations and
            all(_arguments(v) or isinstance(v, dict) for v in configurations.values())):
        raise ConfigError('%s: "configurations" maps names to lists of expand_net arguments, such as '
                          '{"plain": ["--preset", "lenet-deep", "--no-dropin"]}' % name_or_path)
    check_chains(experiment, name_or_path)
    for key in ("iterations", "test_interval", "train_count", "test_count"):
        value = getattr(experiment, key)
        if (value is not None or key in ("iterations", "test_interval")) and not (_is_int(value) and value >= 1):
            raise ConfigError('%s: "%s" must be an integer >= 1, got %s' % (name_or_path, key, _shown(value)))
    if not (isinstance(experiment.seeds, list) and experiment.seeds and all(_is_int(s) for s in experiment.seeds)):
        raise ConfigError('%s: "seeds" must be a non-empty list of integers, got %s'
                          % (name_or_path, _shown(experiment.seeds)))
    check_solver(experiment.solver, name_or_path)
    check_panels(experiment, name_or_path)
    for key in ("name", "dataset", "description"):
        if not isinstance(getattr(experiment, key), str):
            raise ConfigError('%s: "%s" must be a string, got %s'
                              % (name_or_path, key, _shown(getattr(experiment, key))))
    return experiment


def check_panels(experiment, where):
    """Every panel a string that starts at least one configuration's name."""
    panels = experiment.panels
    if panels is None:
        return
    if not (isinstance(panels, list) and panels and all(isinstance(p, str) and p for p in panels)):
        raise ConfigError('%s: "panels" must be a non-empty list of configuration-name prefixes, got %s'
                          % (where, _shown(panels)))
    for prefix in panels:
        if not experiment.panel(prefix):
            raise ConfigError('%s: panel %r starts no configuration\'s name; configurations: %s'
                              % (where, prefix, clip(", ".join(experiment.configurations))))


# The solver fields every run's own settings decide (runner.build_run).
RUNNER_SOLVER_FIELDS = {"net", "max_iter", "test_interval", "test_iter", "display", "random_seed", "snapshot",
                        "snapshot_after_train", "snapshot_prefix", "solver_mode"}


def check_solver(solver, where):
    """Raise ConfigError unless `solver` is None or maps solver field names to numbers or strings,
    none of them a field the runner sets (Caffe's caffe_pb2 checks the names when a run is built)."""
    if solver is None:
        return
    if not (isinstance(solver, dict) and all(isinstance(k, str) and re.fullmatch(r"[a-z_][a-z0-9_]*", k) and
                                             isinstance(v, (int, float, str)) and not isinstance(v, bool)
                                             for k, v in solver.items())):
        raise ConfigError('%s: "solver" maps solver field names to numbers or strings, such as {"lr_policy": '
                          '"fixed", "weight_decay": 0}; got %s' % (where, _shown(solver)))
    taken = sorted(set(solver) & RUNNER_SOLVER_FIELDS)
    if taken:
        raise ConfigError('%s: "solver" cannot set %s: the runner sets it for every run (use "iterations", '
                          '"test_interval" or --seeds instead)' % (where, ", ".join(taken)))


def _arguments(value):
    return isinstance(value, list) and all(isinstance(a, str) for a in value)


STAGE_KEYS = {"arguments", "after", "iterations"}


def check_chains(experiment, where):
    """Raise ConfigError unless every object configuration has arguments, valid iterations and an
    "after" naming another configuration, with no cycle."""
    configurations = experiment.configurations
    for name, value in configurations.items():
        if not isinstance(value, dict):
            continue
        label = '%s: configuration "%s"' % (where, clip(name))
        unknown = sorted(set(value) - STAGE_KEYS)
        if unknown or not _arguments(value.get("arguments")):
            raise ConfigError('%s: an object configuration has "arguments" (a list of expand_net arguments) and '
                              'optionally "after" and "iterations"%s' % (label, ", got unknown keys %s" % unknown
                                                                        if unknown else ""))
        if "iterations" in value and not (_is_int(value["iterations"]) and value["iterations"] >= 1):
            raise ConfigError('%s: "iterations" must be an integer >= 1, got %s' % (label, _shown(value["iterations"])))
        after = value.get("after")
        if after is not None and (not isinstance(after, str) or after not in configurations or after == name):
            others = [json.dumps(n) for n in configurations if n != name]
            raise ConfigError('%s: "after" must name another configuration of the experiment, %s; got %s'
                              % (label, "one of " + ", ".join(others) if others else "and there is none",
                                 _shown(after)))
    for name in configurations:
        seen = []
        while name is not None:
            if name in seen:
                raise ConfigError('%s: configurations %s start from each other in a cycle; one of them must start '
                                  'from scratch' % (where, " -> ".join(json.dumps(n) for n in seen + [name])))
            seen.append(name)
            value = configurations[name]
            name = value.get("after") if isinstance(value, dict) else None


def _is_int(value):
    # JSON true is a Python bool, which is an int; an experiment of `true` iterations is a mistake.
    return isinstance(value, int) and not isinstance(value, bool)


def _shown(value):
    text = json.dumps(value)
    return clip(text)


def slug(name):
    return re.sub(r"[^A-Za-z0-9.=-]+", "_", name).strip("_")


