"""Shared fixtures. Tests run in a real Caffe: `tools/caffe-env run python3 -m pytest tests`."""
import os
import textwrap

os.environ.setdefault("GLOG_minloglevel", "2")  # read by glog when caffe loads: keep logs quiet
os.environ.setdefault("MPLBACKEND", "Agg")

import caffe  # noqa: E402
import pytest  # noqa: E402

caffe.set_mode_cpu()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
