"""Shared fixtures. Tests run in a real Caffe: `tools/caffe-env run python3 -m pytest tests`.

Tests marked `caffe` (a whole module by `pytestmark`, or one test) need Caffe. Where there is no
`caffe` to import (a host with `pip install -e ".[test]"`), they are skipped with the reason and
the pure-Python rest runs; where caffe imports, none of them is skipped. A module that imports caffe
at its top does so under `if HAS_CAFFE:`, so that it is still collected without Caffe.
"""
import os
import textwrap

os.environ.setdefault("GLOG_minloglevel", "2")  # read by glog when caffe loads: keep logs quiet
os.environ.setdefault("MPLBACKEND", "Agg")

import pytest  # noqa: E402

try:
    import caffe  # noqa: E402
except ModuleNotFoundError as error:
    if error.name != "caffe":  # a Caffe that is here but broken fails the run: it is never a reason to skip
        raise
    HAS_CAFFE = False
else:
    HAS_CAFFE = True
    caffe.set_mode_cpu()

NEEDS_CAFFE = "needs Caffe: run through tools/caffe-env run python3 -m pytest tests"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_configure(config):
    config.addinivalue_line("markers", "caffe: the test needs Caffe or what comes with it (pycaffe, the caffe "
                            "tools, caffe-doc's nets, lmdb, the native layers); skipped where caffe does not import")


def pytest_collection_modifyitems(config, items):
    if HAS_CAFFE:
        return  # every test runs: the README's command skips nothing
    for item in items:
        if item.get_closest_marker("caffe") is not None:
            item.add_marker(pytest.mark.skip(reason=NEEDS_CAFFE), append=False)  # before any other skip's reason


@pytest.fixture
def write(tmp_path):
    """write(name, text) -> path: put a dedented prototxt (or any text) in tmp_path."""
    def _write(name, text):
        path = tmp_path / name
        path.write_text(textwrap.dedent(text))
        return str(path)
    return _write


# DummyData (8 gaussian 1x6x6 images, label 2) -> InnerProduct "prev" -> InnerProduct "new": a
# net small enough for `caffe train` in a fraction of a second, for a DropIn to join prev and new.
TINY_LAYERS = """\
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 8 dim: 1 dim: 6 dim: 6 } shape { dim: 8 }
                     data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "prev" type: "InnerProduct" bottom: "data" top: "prev"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
layer { name: "new" type: "InnerProduct" bottom: "prev" top: "new"
  inner_product_param { num_output: 4 weight_filler { type: "xavier" } } }
"""


def python_layer(name, kind, bottoms, tops, param_str, counter=True):
    """Prototxt for one of our Python layers; `counter` adds DropIn's frozen parameter spec."""
    lines = ['layer { name: "%s" type: "Python"' % name]
    lines += ['  bottom: "%s"' % b for b in bottoms] + ['  top: "%s"' % t for t in tops]
    if counter:
        lines.append("  param { lr_mult: 0 decay_mult: 0 }")
    lines.append('  python_param { module: "dropin_caffe.layers" layer: "%s" param_str: \'%s\' } }'
                 % (kind, param_str))
    return "\n".join(lines) + "\n"


def input_layer(name, shape):
    dims = " ".join("dim: %d" % d for d in shape)
    return 'layer { name: "%s" type: "Input" top: "%s" input_param { shape { %s } } }\n' % (name, name, dims)


def layer_object(net, name):
    """The Python object behind a Python layer of a caffe.Net (pycaffe hands back our instance)."""
    return net.layers[list(net._layer_names).index(name)]


# Structurally odd nets that still parse: one-line ConfigErrors naming the layer and the field.
ODD_HEAD = ('name: "n"\nlayer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 '
            'dim: 8 dim: 8 } } }\nlayer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1" '
            'convolution_param { num_output: 4 kernel_size: 3 } }\n')
ODD_NETS = [
    ('layer { type: "Convolution" }', 'Convolution layer #3: needs a "bottom"'),
    ('layer { type: "InnerProduct" }', 'InnerProduct layer #3: needs a "bottom"'),
    ('layer { type: "Pooling" }', 'Pooling layer #3: needs a "bottom"'),
    ("layer { name { } }", 'layer #3: "name" must be a quoted string, got a message'),
    ('layer: "conv2"', "net: layer #3 must be a message `layer {"),
    ('layer { include: "pool2" }', 'layer #3: "include" must be a message `include { ... }`, got \'pool2\''),
    ('layer { top: "x" }\nlayer { }', 'layer #3: needs "type"'),
    ('layer { name: "a" type: "ReLU" bottom: "conv1" top: 3 }', 'layer \'a\': "top" must be a quoted string, got 3'),
    ('layer { name: "c" type: "Convolution" bottom: "conv1" top: "c" convolution_param: 3 }',
     'layer \'c\': "convolution_param" must be a message'),
    ('layer { name: "i" type: "Input" top: "x" input_param { shape: 3 } }', "Input 'i': \"shape\" must be a message"),
    ('layer { name: "a" type: "ReLU" bottom: "conv1" top: "a" include { phase: TRIAN } }',
     'layer \'a\': "include { phase }" must be TRAIN or TEST, got Enum(\'TRIAN\')'),
    ('layer { name: "a" name: "b" type: "ReLU" bottom: "conv1" top: "a" }', 'layer \'a\': "name" is given 2 times'),
]


NATIVE_TYPES = {"DropIn": "DropIn", "Resize": "DropInResize"}  # our kinds -> the native layers' types


@pytest.fixture(scope="session")
def native_library():
    """Build (from scratch in CI: the first call compiles) and load the native layers."""
    from dropin_caffe import native
    return native.load()


@pytest.fixture(params=["python", "native"])
def impl(request):
    """Each test using it runs against the Python and the native layers."""
    if request.param == "native":
        request.getfixturevalue("native_library")
    return request.param


def our_layer(impl, name, kind, bottoms, tops, param_str, counter=True):
    """One of our layers in `impl`; the native one differs by its type line alone."""
    text = python_layer(name, kind, bottoms, tops, param_str, counter)
    return text if impl == "python" else text.replace('type: "Python"', 'type: "%s"' % NATIVE_TYPES[kind], 1)


def processes(fragment):
    """{pid: parent pid} of the processes whose command line contains `fragment` (this test's own caffe runs)."""
    found = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open("/proc/%s/stat" % pid) as f:
                parent = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if fragment in command:
            found[int(pid)] = parent
    return found


def wait_for(condition, seconds, what):
    """Poll `condition()` until it is true; fail the test after `seconds` naming `what`."""
    import time
    deadline = time.time() + seconds
    while not condition():
        if time.time() > deadline:
            pytest.fail("gave up after %d s waiting for %s" % (seconds, what))
        time.sleep(0.2)
