"""The Python API: dropin_caffe.expand_net, Expansion, and the NetSpec helpers."""
import os
import subprocess
import sys

import pytest
from google.protobuf import text_format

import dropin_caffe
from conftest import HAS_CAFFE
from dropin_caffe import ConfigError, expand_net, netspec
from dropin_caffe.cli.expand_net import main as expand_main
from dropin_caffe.netgen import prototxt, templates

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe
    from caffe import layers as L
    from caffe.proto import caffe_pb2


def test_expand_net_on_a_template_a_preset_and_a_file(tmp_path, capsys):
    preset = expand_net(preset="lenet-deep", depth=2, dropin_length=100, validate=False)
    assert [row.layer for row in preset.rows if row.marked] == ["conv2_1_dropin", "conv2_2_dropin"]
    assert (preset.original.weight_layers, preset.expanded.weight_layers, preset.expanded.ours) == (4, 6, 2)
    assert preset.net_name == "lenet_deep_dropin.prototxt" and "base_lr" in preset.solver_text
    template = expand_net(template="cifar10_quick", replicate={"conv2": 1}, dropin=False, validate=False)
    assert template.net_name == "cifar10_quick_plain.prototxt" and template.expanded.ours == 0
    path = tmp_path / "lenet.prototxt"
    path.write_text(templates.render_net("lenet", dummy_data=True))
    from_file = expand_net(str(path), replicate={"conv2": 1}, dropin_length=10)  # validated in Caffe
    from_text = expand_net(path.read_text(), replicate={"conv2": 1}, dropin_length=10, validate=False)
    assert from_file.net_text == from_text.net_text and from_file.solver_text is None
    row = next(row for row in from_file.rows if row.layer == "conv2_1")
    assert (row.type, row.shapes, row.params, row.marked) == ("Convolution", [(64, 50, 8, 8)], 62550, False)


def test_the_command_line_writes_what_the_api_writes(tmp_path, capsys):
    path = tmp_path / "lenet.prototxt"
    path.write_text(templates.render_net("lenet", dummy_data=True))
    assert expand_main([str(path), "--replicate", "conv2=2", "--dropin-length", "9", "-o", str(tmp_path / "cli"),
                        "--no-validate", "-q"]) == 0
    result = expand_net(str(path), replicate={"conv2": 2}, dropin_length=9, validate=False)
    assert result.write(str(tmp_path / "api")) == [("net", str(tmp_path / "api" / "lenet_dropin.prototxt"))]
    cli, api = (tmp_path / where / "lenet_dropin.prototxt" for where in ("cli", "api"))
    assert cli.read_text() == api.read_text()


def test_write_refuses_to_overwrite_and_writes_all_or_nothing(tmp_path):
    result = expand_net(preset="lenet-deep", validate=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "lenet_deep_solver_dropin.prototxt").write_text("mine")
    with pytest.raises(ConfigError, match="lenet_deep_solver_dropin.prototxt exists; pass --force"):
        result.write(str(out))
    assert sorted(os.listdir(str(out))) == ["lenet_deep_solver_dropin.prototxt"]  # the net was not written either
    assert (out / "lenet_deep_solver_dropin.prototxt").read_text() == "mine"
    with pytest.raises(ConfigError, match="--draw needs a .png or .svg file"):
        result.write(str(tmp_path / "new"), draw=str(tmp_path / "net.pdf"))
    assert not (tmp_path / "new").exists()
    written = result.write(str(out), force=True)
    assert [kind for kind, _ in written] == ["net", "solver"]
    solver = prototxt.read(str(out / "lenet_deep_solver_dropin.prototxt"))
    assert solver.get("net") == str(out / "lenet_deep_dropin.prototxt")


def test_bad_keywords_raise_the_flags_errors():
    with pytest.raises(ConfigError, match="--replicate conv2=0: K, the number of replicas, must be >= 1"):
        expand_net(template="lenet", replicate={"conv2": 0}, validate=False)
    with pytest.raises(ConfigError, match="give exactly one of a net, a template or a preset"):
        expand_net(template="lenet", preset="lenet-deep")
    with pytest.raises(ConfigError, match="nothing to rewrite"):
        expand_net(templates.render_net("lenet"))


def layer_text(net_param, name):
    layer = next(layer for layer in net_param.layer if layer.name == name)
    return text_format.MessageToString(layer)


@pytest.mark.caffe
def test_netspec_helpers_emit_expand_nets_layers_and_build_in_caffe(tmp_path):
    spec = caffe.NetSpec()
    spec.data = L.Input(shape=dict(dim=[2, 50, 8, 8]))
    spec.conv2_1 = L.Convolution(spec.data, num_output=50, kernel_size=3, pad=1)
    spec.conv2_1_dropin, spec.conv2_1_dropin_p = netspec.dropin(spec.data, spec.conv2_1, 10, name="conv2_1_dropin",
                                                                p_top=True)
    spec.wide = netspec.resize(spec.conv2_1_dropin, channels=60, height=16, width=16)
    mine = spec.to_proto()
    path = tmp_path / "spec.prototxt"
    path.write_text(str(mine))
    net = caffe.Net(str(path), caffe.TRAIN)
    assert net.blobs["wide"].data.shape == (2, 60, 16, 16) and net.blobs["conv2_1_dropin_p"].data.shape == (1,)

    source = ('layer { name: "data" type: "Input" top: "data"\n'
              '  input_param { shape { dim: 2 dim: 50 dim: 8 dim: 8 } } }\n'
              'layer { name: "conv2" type: "Convolution" bottom: "data" top: "conv2" '
              'convolution_param { num_output: 50 kernel_size: 3 pad: 1 } }\n')
    expanded = caffe_pb2.NetParameter()
    text_format.Merge(expand_net(source, replicate={"conv2": 1}, dropin_length=10, p_top=True, validate=False).net_text,
                      expanded)
    assert layer_text(mine, "conv2_1_dropin") == layer_text(expanded, "conv2_1_dropin").replace(
        'bottom: "conv2"', 'bottom: "data"')


@pytest.mark.caffe
def test_netspec_train_blend_is_expand_nets_dropin_train_blend():
    spec = caffe.NetSpec()
    spec.data = L.Input(shape=dict(dim=[2, 50, 8, 8]))
    spec.conv2_1 = L.Convolution(spec.data, num_output=50, kernel_size=3, pad=1)
    spec.conv2_1_dropin = netspec.dropin(spec.data, spec.conv2_1, 10, name="conv2_1_dropin", train="blend")
    source = ('layer { name: "data" type: "Input" top: "data"\n'
              '  input_param { shape { dim: 2 dim: 50 dim: 8 dim: 8 } } }\n'
              'layer { name: "conv2" type: "Convolution" bottom: "data" top: "conv2" '
              'convolution_param { num_output: 50 kernel_size: 3 pad: 1 } }\n')
    expanded = caffe_pb2.NetParameter()
    text_format.Merge(expand_net(source, replicate={"conv2": 1}, dropin_length=10, dropin_train="blend",
                                 validate=False).net_text, expanded)
    mine = layer_text(spec.to_proto(), "conv2_1_dropin")
    assert '\\"train\\": \\"blend\\"' in mine
    assert mine == layer_text(expanded, "conv2_1_dropin").replace('bottom: "conv2"', 'bottom: "data"')
    with pytest.raises(ConfigError, match='"train" must be one of "select", "blend", got "fade"'):
        netspec.dropin(spec.data, spec.data, 10, train="fade")


@pytest.mark.caffe
def test_netspec_options_are_checked_before_caffe_starts():
    spec = caffe.NetSpec()
    spec.data = L.Input(shape=dict(dim=[2, 3]))
    with pytest.raises(ConfigError, match='"length" must be an integer >= 1, got -5'):
        netspec.dropin(spec.data, spec.data, -5)
    with pytest.raises(ConfigError, match='mode "gradual" needs "length"'):
        netspec.dropin(spec.data, spec.data)
    with pytest.raises(ConfigError, match='"p_new" must be a number with 0 < value <= 1, got 2'):
        netspec.dropin(spec.data, spec.data, mode="regularize", p_new=2)
    with pytest.raises(ConfigError, match='"interp" must be one of'):
        netspec.resize(spec.data, channels=4, interp="cubic")
    with pytest.raises(ConfigError, match="give no channels, height or width with it"):
        netspec.resize(spec.data, like=spec.data, channels=4)


def test_public_names():
    assert {"expand_net", "Expansion", "ConfigError", "DropInCaffeError", "netspec"} <= set(dropin_caffe.__all__)
    assert dropin_caffe.netspec is netspec


@pytest.mark.caffe
def test_native_emits_the_native_types_with_the_same_param_str_and_builds_in_caffe():
    python = expand_net(template="lenet", settings={"dummy_data": True}, replicate={"conv2": 2}, dropin_length=10,
                        validate=False)
    native = expand_net(template="lenet", settings={"dummy_data": True}, replicate={"conv2": 2}, dropin_length=10,
                        native=True)  # validated: the library is loaded, caffe.Net builds it in both phases
    assert native.net_text == python.net_text.replace('type: "Python"', 'type: "DropIn"')
    assert [row[:2] for row in native.rows] == [row[:2] for row in python.rows]
    assert native.expanded == python.expanded and native.expanded.ours == 2
    assert native.notes == python.notes  # no "could not be loaded" note: it was built in Caffe


NETSPEC_SCRIPT = """
import caffe
from caffe import layers as L
from dropin_caffe import expand_net
n = caffe.NetSpec()
n.data = L.Input(shape=dict(dim=[2, 3, 1, 1]))
n.conv1 = L.Convolution(n.data, num_output=4, kernel_size=3, pad=1, weight_filler=dict(type="xavier"))
result = expand_net(n.to_proto(), replicate={"conv1": 1}, dropin_length=10, input_shape={"data": (3, 8, 8)})
print(result.net_name, [row.shapes for row in result.rows if row.layer == "conv1_1"])
"""


@pytest.mark.caffe
def test_the_api_takes_a_netspec_and_input_shape_and_keeps_caffes_log_quiet():
    """Issue 22.6: `input_shape` as the flag is named, a NetSpec's caffe_pb2.NetParameter, and no glog
    line on stderr when the caller has not set GLOG_minloglevel (a subprocess: Caffe reads it once)."""
    environ = {k: v for k, v in os.environ.items() if k != "GLOG_minloglevel"}
    done = subprocess.run([sys.executable, "-c", NETSPEC_SCRIPT], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=environ)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "net_dropin.prototxt [[(2, 4, 8, 8)]]\n"
    assert done.stderr == ""  # glog would print the net, twice, as "I1203 05:00:00.123 ... net.cpp:53] ..."
