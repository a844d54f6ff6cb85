"""The built-in stock nets and their solvers, rendered from Jinja templates.

`prototxt_templates/` holds one train/test net per architecture over the layer macros of
`_layers.j2`; `solvers/` holds each net's solver. The nets follow Caffe's own examples (LeNet on
MNIST, the quick and full CIFAR-10 nets), its model zoo (bvlc_alexnet) and the VGG paper
(Simonyan & Zisserman 2014, configurations A = vgg11 and D = vgg16, one template)::

    render_net("alexnet", train_source="/data/train_lmdb", mean_value=[104, 117, 123])
    render_net("vgg16", dummy_data=True, train_batch_size=32, test_batch_size=32)
    render_solver("alexnet", net="alexnet.prototxt", max_iter=1000)

Every variable has a default in NETS and can be overridden; giving a variable the template does
not have is an error. With `dummy_data=True` the nets read DummyData blobs of the database's
shape (Gaussian images, labels 0) instead of a database: for tests and benchmarks. Giving
`mean_value` replaces a default `mean_file` and the other way round (Caffe takes one of them).

Caveats: templates render with StrictUndefined, so a variable nobody gives fails loudly; the
solver templates fix everything but `net`, `snapshot_prefix`, `max_iter` and `solver_mode`.
jinja2 is imported on first render, so importing this module stays cheap.
"""
import collections
import copy
import difflib
import functools
import json
import numbers
import os
import re

from .. import env, params
from ..errors import ConfigError

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# From a checkout, the repo's folders; from an installed package, where setup.py put them.
_ROOT = REPO if os.path.isdir(os.path.join(REPO, "prototxt_templates")) else env.INSTALLED_DATA
TEMPLATE_DIRS = (os.path.join(_ROOT, "prototxt_templates"), os.path.join(_ROOT, "solvers"))

NetTemplate = collections.namedtuple("NetTemplate", "net defaults solver solver_defaults")
NetTemplate.__doc__ = "A built-in net: its template file and variables, its solver template and variables."

VGG_A = [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"]
VGG_D = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def _data(image_shape, train_source, test_source, train_batch_size, test_batch_size, **transform):
    """Variables of the data layers: a database by default, DummyData with dummy_data=True.
    `image_shape` is (C, H, W) of the images in the database, before any crop."""
    variables = dict(dummy_data=False, image_shape=image_shape, train_source=train_source, test_source=test_source,
                     backend="LMDB",
                     train_batch_size=train_batch_size, test_batch_size=test_batch_size,
                     scale=None, mean_file=None, mean_value=None, crop_size=None, mirror=False)
    variables.update(transform)
    return variables


def _solver(name, max_iter):
    return dict(net="%s_train_test.prototxt" % name, snapshot_prefix=name, max_iter=max_iter, solver_mode="CPU")


_MNIST = ("examples/mnist/mnist_train_lmdb", "examples/mnist/mnist_test_lmdb")
_CIFAR10 = ("examples/cifar10/cifar10_train_lmdb", "examples/cifar10/cifar10_test_lmdb")
_CIFAR10_MEAN = "examples/cifar10/mean.binaryproto"
_IMAGENET = ("examples/imagenet/ilsvrc12_train_lmdb", "examples/imagenet/ilsvrc12_val_lmdb")
_IMAGENET_MEAN = "data/ilsvrc12/imagenet_mean.binaryproto"


def _vgg(config, name):
    net = dict(_data([3, 256, 256], *_IMAGENET, 256, 50, mean_value=[104, 117, 123], crop_size=224, mirror=True),
               config=config, weight_filler="gaussian")
    return NetTemplate("vgg.prototxt.j2", net, "vgg_solver.prototxt.j2", _solver(name, 370000))


NETS = {
    "lenet": NetTemplate("lenet.prototxt.j2", dict(_data([1, 28, 28], *_MNIST, 64, 100, scale=0.00390625),
                                                   dropout_ratio=None, widths=[20, 50, 500]),
                         "lenet_solver.prototxt.j2", _solver("lenet", 10000)),
    "cifar10_quick": NetTemplate("cifar10_quick.prototxt.j2",
                                 _data([3, 32, 32], *_CIFAR10, 100, 100, mean_file=_CIFAR10_MEAN),
                                 "cifar10_quick_solver.prototxt.j2", _solver("cifar10_quick", 4000)),
    "cifar10_full": NetTemplate("cifar10_full.prototxt.j2",
                                _data([3, 32, 32], *_CIFAR10, 100, 100, mean_file=_CIFAR10_MEAN),
                                "cifar10_full_solver.prototxt.j2", _solver("cifar10_full", 60000)),
    "alexnet": NetTemplate("alexnet.prototxt.j2",
                           _data([3, 256, 256], *_IMAGENET, 256, 50, mean_file=_IMAGENET_MEAN, crop_size=227,
                                 mirror=True),
                           "alexnet_solver.prototxt.j2", _solver("alexnet", 450000)),
    "vgg11": _vgg(VGG_A, "vgg11"),
    "vgg16": _vgg(VGG_D, "vgg16"),
}


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _optional(rule):
    text, check = rule
    return (text + " or null", lambda value: value is None or check(value))


def _is_vgg_config(value):
    return (isinstance(value, (list, tuple)) and any(v != "M" for v in value)
            and all(v == "M" or params.integer(1)[1](v) for v in value))


RULES = {
    "dummy_data": ("true or false", lambda value: isinstance(value, bool)),
    "mirror": ("true or false", lambda value: isinstance(value, bool)),
    "train_source": params.text(),
    "test_source": params.text(),
    "backend": params.choice("LMDB", "LEVELDB"),
    "train_batch_size": params.integer(1),
    "test_batch_size": params.integer(1),
    "scale": _optional(("a number > 0", lambda value: _is_number(value) and value > 0)),
    "mean_file": _optional(params.text()),
    "mean_value": _optional(("a number or a list of numbers", lambda value: _is_number(value) or (
        isinstance(value, (list, tuple)) and len(value) > 0 and all(map(_is_number, value))))),
    "crop_size": _optional(params.integer(1)),
    "image_shape": ("a list of 3 integers >= 1 (channels, height, width)", lambda value: isinstance(
        value, (list, tuple)) and len(value) == 3 and all(params.integer(1)[1](v) for v in value)),
    "config": ('a list of conv widths (integers >= 1) and "M" (2x2 max pool), such as [64, "M", 128, "M"]',
               _is_vgg_config),
    "weight_filler": params.choice("gaussian", "xavier"),
    "widths": ("a list of 3 integers >= 1 (the outputs of conv1, conv2 and ip1)", lambda value: isinstance(
        value, (list, tuple)) and len(value) == 3 and all(params.integer(1)[1](v) for v in value)),
    "dropout_ratio": _optional(("a number with 0 < value < 1", lambda value: _is_number(value) and 0 < value < 1)),
    "net": params.text(),
    "snapshot_prefix": params.text(),
    "max_iter": params.integer(1),
    "solver_mode": params.choice("CPU", "GPU"),
}


def render_net(name, **variables):
    """The train/test prototxt of built-in net `name`, its defaults overridden by `variables`."""
    entry = _entry(name)
    return _render('template "%s"' % name, entry.net, entry.defaults, variables)


def data_shape(name, **variables):
    """(C, H, W) of the data blob of built-in net `name` with `variables`: the image shape, cropped."""
    values = dict(_entry(name).defaults, **variables)
    channels, height, width = values["image_shape"]
    crop = values.get("crop_size")
    return (channels, crop or height, crop or width)


def render_solver(name, **variables):
    """The solver prototxt of built-in net `name`, its defaults overridden by `variables`."""
    entry = _entry(name)
    return _render('solver of template "%s"' % name, entry.solver, entry.solver_defaults, variables)


def template_variables(filename):
    """The variables a template file reads (those it neither sets nor imports)."""
    return set(_variables(filename))


def parse_value(text):
    """A command-line `--set NAME=VALUE` value: JSON when it parses (32, 0.5, true, null,
    [64, "M"]), else the text itself (paths, LMDB, CPU)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _entry(name):
    if name in NETS:
        return NETS[name]
    near = difflib.get_close_matches(str(name), NETS, n=3)
    hint = " (did you mean %s?)" % " or ".join('"%s"' % n for n in near) if near else ""
    raise ConfigError('unknown template "%s"%s; choose one of %s' % (name, hint, ", ".join(sorted(NETS))))


def _render(label, filename, defaults, given):
    from jinja2 import UndefinedError

    known = _variables(filename) | set(defaults)
    for key in given:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = ' (did you mean "%s"?)' % near[0] if near else ""
            raise ConfigError('%s has no variable "%s"%s; its variables: %s'
                              % (label, key, hint, ", ".join(sorted(known))))
    values = copy.deepcopy(defaults)
    _one_mean(label, values, given)
    values.update(given)
    for key, value in values.items():
        if key in RULES and not RULES[key][1](value):
            raise ConfigError('%s: variable "%s" must be %s, got %s; give it with --set %s=VALUE'
                              % (label, key, RULES[key][0], json.dumps(value, default=repr), key))
    if _is_number(values.get("mean_value")):
        values["mean_value"] = [values["mean_value"]]
    try:
        return _environment().get_template(filename).render(values)
    except UndefinedError as error:
        missing = re.match(r"'(\w+)' is undefined$", str(error))
        if not missing:
            raise ConfigError("%s (%s): %s" % (label, filename, error)) from None
        raise ConfigError('%s needs variable "%s"; give it with --set %s=VALUE'
                          % (label, missing.group(1), missing.group(1))) from None


def _one_mean(label, values, given):
    """Caffe takes mean_file or mean_value: the one given replaces the other's default."""
    chosen = [key for key in ("mean_file", "mean_value") if given.get(key) is not None]
    if len(chosen) == 2:
        raise ConfigError('%s: give mean_file or mean_value, not both; got mean_file %s and mean_value %s; '
                          'set one of them to null' % (label, json.dumps(given["mean_file"], default=repr),
                                                       json.dumps(given["mean_value"], default=repr)))
    for key in chosen:
        other = "mean_value" if key == "mean_file" else "mean_file"
        if other in values and other not in given:
            values[other] = None


@functools.lru_cache(maxsize=None)
def _variables(filename):
    from jinja2 import meta

    environment = _environment()
    source = environment.loader.get_source(environment, filename)[0]
    return frozenset(meta.find_undeclared_variables(environment.parse(source)) - set(environment.globals))


@functools.lru_cache(maxsize=None)
def _environment():
    import jinja2

    environment = jinja2.Environment(loader=jinja2.FileSystemLoader(list(TEMPLATE_DIRS)),
                                     undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                                     trim_blocks=True, lstrip_blocks=True, autoescape=False)
    environment.filters["proto"] = _proto
    return environment


def _proto(value):
    """A Python value as a protobuf text-format scalar: true/false, a quoted string, a number."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # JSON's escapes are valid protobuf text escapes
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return str(value)  # an undefined variable raises here, naming itself
