"""expand_net's command line as a user meets it: `expand_main(argv, out, err)` with captured streams.

Every bad input must end in one line on stderr ("expand_net.py: ..."), exit code 2, nothing on
stdout and the output directory exactly as it was (a file already there stays byte-identical, no
temporary file is left behind). Every successful run is checked on its files: their names, the
emitted solver field by field against the original, the DropIn layers' parameters, the summary
table, the drawings; the emitted nets are built by Caffe, and one is trained by `caffe train`.
"""
import io
import json
import os
import re
import subprocess
import textwrap

import pytest

from conftest import HAS_CAFFE
from dropin_caffe.cli.expand_net import main as expand_main
from dropin_caffe.netgen import prototxt
from dropin_caffe.netgen.prototxt import Enum

if HAS_CAFFE:  # else this module is still collected, and conftest skips its tests marked caffe
    import caffe

STOCK_MNIST = "/usr/share/doc/caffe-doc/examples/mnist"

# A LeNet-like net whose shapes are known from its DummyData layer. Worked out by hand (batch 4):
# data 1x12x12 -> conv1 (3x3) 4x10x10 -> conv2 (3x3, stride 2) 6x4x4 -> pool2 (2x2, stride 2) 6x2x2
# -> ip1 8 -> Dropout -> ip2 3 -> loss; accuracy only in TEST.
TINY = """\
    name: "tiny"
    layer { name: "data" type: "DummyData" top: "data" top: "label"
      dummy_data_param { shape { dim: 4 dim: 1 dim: 12 dim: 12 } shape { dim: 4 }
        data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
      convolution_param { num_output: 4 kernel_size: 3 weight_filler { type: "xavier" } } }
    layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
    layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
      convolution_param { num_output: 6 kernel_size: 3 stride: 2 weight_filler { type: "xavier" } } }
    layer { name: "pool2" type: "Pooling" bottom: "conv2" top: "pool2"
      pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
    layer { name: "ip1" type: "InnerProduct" bottom: "pool2" top: "ip1"
      inner_product_param { num_output: 8 weight_filler { type: "xavier" } } }
    layer { name: "relu3" type: "ReLU" bottom: "ip1" top: "ip1" }
    layer { name: "drop1" type: "Dropout" bottom: "ip1" top: "ip1" dropout_param { dropout_ratio: 0.5 } }
    layer { name: "ip2" type: "InnerProduct" bottom: "ip1" top: "ip2"
      inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
    layer { name: "accuracy" type: "Accuracy" bottom: "ip2" bottom: "label" top: "accuracy"
      include { phase: TEST } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip2" bottom: "label" top: "loss" }
"""

SOLVER = """\
    net: "tiny.prototxt"
    test_iter: 1
    test_interval: 5
    base_lr: 0.01
    momentum: 0.9
    weight_decay: 0.0005
    lr_policy: "fixed"
    display: 1
    max_iter: 100
    iter_size: 2
    snapshot: 0
    snapshot_prefix: "%s"
    solver_mode: GPU
"""

# The V1 (2014) format of a small net: `input:` dims and `layers { type: ENUM }`.
V1_NET = """\
    name: "old"
    input: "data"
    input_dim: 2
    input_dim: 1
    input_dim: 10
    input_dim: 10
    layers { name: "conv1" type: CONVOLUTION bottom: "data" top: "conv1"
      blobs_lr: 1 blobs_lr: 2
      convolution_param { num_output: 3 kernel_size: 3 pad: 1 weight_filler { type: "xavier" } } }
    layers { name: "relu1" type: RELU bottom: "conv1" top: "conv1" }
    layers { name: "ip" type: INNER_PRODUCT bottom: "conv1" top: "ip"
      inner_product_param { num_output: 2 } }
"""


def expand_net(*argv):
    """(exit code, stdout, stderr) of one expand_net run."""
    out, err = io.StringIO(), io.StringIO()
    code = expand_main([str(arg) for arg in argv], out=out, err=err)
    return code, out.getvalue(), err.getvalue()


def contents(directory):
    """{path relative to `directory`: bytes} of every file below it, hidden ones included."""
    found = {}
    for root, _, files in os.walk(str(directory)):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as stream:
                found[os.path.relpath(path, str(directory))] = stream.read()
    return found


def refused(argv, out_dir, *words):
    """Run expand_net, expecting the one-line refusal: returns that line."""
    before = contents(out_dir)
    code, out, err = expand_net(*argv, "-o", out_dir)
    lines = err.splitlines()
    assert code == 2, (code, out, err)
    assert len(lines) == 1 and lines[0].startswith("expand_net.py: "), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert out == ""
    assert contents(out_dir) == before
    return lines[0]


def layer(net, name):
    found = [item for item in net.get_all("layer") if item.get("name") == name]
    assert len(found) == 1, (name, [item.get("name") for item in net.get_all("layer")])
    return found[0]


def python_config(net_layer):
    return json.loads(net_layer.get("python_param").get("param_str"))


def dropin_names(net):
    return [item.get("name") for item in net.get_all("layer")
            if item.get("type") == "Python" and item.get("python_param").get("layer") == "DropIn"]


@pytest.fixture
def tiny(write):
    return write("tiny.prototxt", TINY)


@pytest.fixture
def tiny_solver(write):
    return write("tiny_solver.prototxt", SOLVER % "snaps/tiny")


@pytest.fixture
def out_dir(tmp_path):
    """The output directory, already holding a file that every run must leave alone."""
    directory = tmp_path / "out"
    directory.mkdir()
    (directory / "notes.txt").write_bytes(b"results of last week\n")
    return str(directory)


# ---------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, nothing written

DL = ["--dropin-length", "50"]

REFUSALS = [
    ("unknown-layer", ["{net}", "--replicate", "conv22=1"] + DL, ["conv22", "no layer named", "did you mean", "conv2"]),
    ("replicate-data", ["{net}", "--replicate", "data=1"] + DL, ["--replicate data", "data layer"]),
    ("replicate-loss", ["{net}", "--replicate", "loss=1"] + DL, ["--replicate loss", "SoftmaxWithLoss", "loss"]),
    ("replicate-accuracy", ["{net}", "--replicate", "accuracy=1"] + DL, ["--replicate accuracy", "Accuracy"]),
    ("k-zero", ["{net}", "--replicate", "conv2=0"] + DL, ["conv2=0", ">= 1"]),
    ("k-negative", ["{net}", "--replicate", "conv2=-2"] + DL, ["conv2=-2", ">= 1"]),
    ("length-zero", ["{net}", "--replicate", "conv2=1", "--dropin-length", "0"], ["--dropin-length", ">= 1", "0"]),
    ("length-missing", ["{net}", "--replicate", "conv2=1"], ["gradual DropIn needs --dropin-length L", "--no-dropin"]),
    ("p-zero", ["{net}", "--regularize", "drop1=0"], ["--regularize drop1", "(0, 1]"]),
    ("p-above-one", ["{net}", "--regularize", "drop1=1.5"], ["--regularize drop1", "1.5", "(0, 1]"]),
    ("regularize-not-dropout", ["{net}", "--regularize", "ip1=0.5"], ["--regularize ip1", "Dropout", "InnerProduct"]),
    ("regularize-unknown", ["{net}", "--regularize", "drop2=0.5"], ["drop2", "did you mean", "drop1"]),
    ("even-replica-kernel", ["{net}", "--replicate", "conv2=1", "--replica-kernel", "4"] + DL,
     ["even", "--replica-kernel", "odd"]),
    ("shape-not-preserved", ["{net}", "--replicate", "pool2=1"] + DL, ["--replicate pool2", "Pooling", "(4, 6, 2, 2)"]),
    ("stagger-negative", ["{net}", "--replicate", "conv2=2", "--stagger", "-1"] + DL, ["--stagger", ">= 0", "-1"]),
    ("replicate-no-equals", ["{net}", "--replicate", "conv2"] + DL, ["--replicate", "LAYER=K", "'conv2'"]),
    ("replicate-not-integer", ["{net}", "--replicate", "conv2=two"] + DL, ["--replicate", "LAYER=K", "conv2=two"]),
    ("replicate-no-name", ["{net}", "--replicate", "=2"] + DL, ["--replicate", "LAYER=K", "'=2'"]),
    ("regularize-not-number", ["{net}", "--regularize", "drop1=half"], ["--regularize", "LAYER=P", "drop1=half"]),
    ("regularize-empty-prev", ["{net}", "--regularize", "drop1=0.5:"], ["--regularize", "LAYER=P:BLOB", "drop1=0.5:"]),
    ("regularize-prev-unknown", ["{net}", "--regularize", "drop1=0.5:conv9"],
     ["--regularize drop1=0.5:conv9", "prev must be a blob made before drop1"]),
    ("widen-not-wider", ["{net}", "--widen", "conv1=4"] + DL,
     ["--widen conv1=4", "C2, the widened number of outputs", "above conv1's num_output 4"]),
    ("widen-not-integer", ["{net}", "--widen", "conv1=wide"] + DL, ["--widen", "LAYER=C2", "conv1=wide"]),
    ("widen-pooling", ["{net}", "--widen", "pool2=8"] + DL, ["--widen pool2=8", "Pooling"]),
    ("widen-length-missing", ["{net}", "--widen", "conv1=6"],
     ["gradual DropIn needs --dropin-length L", "--no-dropin"]),
    ("solver-as-net", ["{solver}", "--replicate", "conv2=1"] + DL,
     ["no layer named 'conv2'", "it has no layers (a solver? give the net, and the solver with --solver)"]),
    ("unknown-layer-far", ["{net}", "--replicate", "zzz=1"] + DL,
     ["no layer named 'zzz'", "its layers: data, conv1, "]),
    ("widen-and-replicate", ["{net}", "--widen", "conv2=8", "--replicate", "conv2=1"] + DL,
     ["--widen conv2 and --replicate conv2", "give one"]),
    ("input-shape-not-integers", ["{net}", "--input-shape", "data=1,a,12"],
     ["--input-shape", "BLOB=C,H,W", "data=1,a,12"]),
    ("input-shape-no-equals", ["{net}", "--input-shape", "data"], ["--input-shape", "BLOB=C,H,W"]),
    ("input-shape-disagrees", ["{net}", "--replicate", "conv2=1", "--input-shape", "data=3,12,12"] + DL,
     ["'data'", "disagrees"]),
    ("draw-jpg", ["{net}", "--replicate", "conv2=1", "--draw", "{out}/net.jpg"] + DL,
     ["--draw", ".png or .svg", "net.jpg"]),
    ("max-iter-without-solver", ["{net}", "--replicate", "conv2=1", "--max-iter", "3"] + DL,
     ["--max-iter", "--solver"]),
    ("solver-mode-without-solver", ["{net}", "--replicate", "conv2=1", "--solver-mode", "CPU"] + DL,
     ["--solver-mode", "--solver"]),
    ("max-iter-zero", ["{net}", "--replicate", "conv2=1", "--solver", "{solver}", "--max-iter", "0"] + DL,
     ["--max-iter", ">= 1"]),
    ("solver-mode-unknown", ["{net}", "--solver", "{solver}", "--solver-mode", "TPU"], ["--solver-mode", "TPU"]),
    ("net-missing", ["{tmp}/no_such_net.prototxt", "--replicate", "conv2=1"] + DL,
     ["no_such_net.prototxt", "no such file"]),
    ("solver-missing", ["{net}", "--replicate", "conv2=1", "--solver", "{tmp}/no_solver.prototxt"] + DL,
     ["no_solver.prototxt", "no such file"]),
    ("net-is-directory", ["{tmp}", "--replicate", "conv2=1"] + DL, ["directory"]),
    ("no-net", ["--replicate", "conv2=1"] + DL, ["net", "--template", "--preset", "required"]),
    ("net-and-template", ["{net}", "--template", "lenet"], ["not allowed"]),
    ("unknown-option", ["{net}", "--replicas", "conv2=1"], ["unrecognized", "--replicas"]),
    ("unknown-template", ["--template", "lenett"], ['unknown template "lenett"', 'did you mean "lenet"']),
    ("unknown-template-variable", ["--template", "lenet", "--set", "batch_size=8"],
     ['no variable "batch_size"', "train_batch_size"]),
    ("bad-template-value", ["--template", "lenet", "--set", "train_batch_size=0"], ['"train_batch_size"', ">= 1"]),
    ("template-variable-null", ["--template", "lenet", "--set", "image_shape=null"], ['"image_shape"', "null"]),
    ("set-without-template", ["{net}", "--set", "train_batch_size=8"], ["--set", "--template or --preset"]),
    ("set-malformed", ["--template", "lenet", "--set", "train_batch_size"], ["--set", "VAR=VALUE"]),
    ("unknown-preset", ["--preset", "lenet-deeper"], ["--preset", "lenet-deeper", "lenet-deep"]),
    ("depth-without-preset", ["{net}", "--depth", "3"], ["--depth", "lenet-deep"]),
    ("depth-other-preset", ["--preset", "cifar10-11", "--depth", "3"], ["--depth", "lenet-deep"]),
    ("depth-zero", ["--preset", "lenet-deep", "--depth", "0"], ["--depth", ">= 1"]),
    ("width-without-preset", ["{net}", "--replicate", "conv2=1", "--width", "8"] + DL, ["--width", "lenet-deep"]),
    ("width-other-preset", ["--preset", "cifar10-11", "--width", "8"], ["--width", "lenet-deep"]),
    ("width-zero", ["--preset", "lenet-deep", "--width", "0"], ["--width", ">= 1", "got 0"]),
    ("length-growth-zero", ["--preset", "lenet-deep", "--length-growth", "0"], ["--length-growth", "> 0", "got 0.0"]),
    ("length-growth-nan", ["--preset", "lenet-deep", "--length-growth", "nan"], ["--length-growth", "got nan"]),
    ("length-growth-plain", ["--preset", "lenet-deep", "--length-growth", "1.1", "--no-dropin"],
     ["--length-growth", "--no-dropin"]),
    ("length-growth-overflow", ["--preset", "lenet-deep", "--depth", "100", "--length-growth", "2"],
     ["--length-growth 2.0", "2**62", "smaller G"]),
    ("dropin-train-unknown", ["{net}", "--replicate", "conv2=1", "--dropin-train", "mix"] + DL,
     ["--dropin-train", "'mix'", "select", "blend"]),
    ("dropin-train-blend-no-dropin", ["{net}", "--replicate", "conv2=1", "--no-dropin", "--dropin-train", "blend"],
     ["--dropin-train blend", "--no-dropin"]),
]


@pytest.mark.parametrize("argv, words", [case[1:] for case in REFUSALS], ids=[case[0] for case in REFUSALS])
def test_bad_input_is_one_line_exit_2_and_nothing_written(argv, words, tiny, tiny_solver, out_dir, tmp_path):
    places = dict(net=tiny, solver=tiny_solver, tmp=str(tmp_path), out=out_dir)
    refused([arg.format(**places) for arg in argv], out_dir, *words)
    assert sorted(os.listdir(str(tmp_path))) == ["out", "tiny.prototxt", "tiny_solver.prototxt"]


def test_messages_name_the_command_as_typed_and_say_what_is_required(tiny, out_dir, monkeypatch, capsys):
    """Issue 22.9 and 22.12: the console script is `expand_net`, and --dropin-length is required."""
    assert expand_net(tiny, "--replicate", "conv2=1", "-o", out_dir)[2].startswith("expand_net.py: gradual DropIn")
    monkeypatch.setattr("sys.argv", ["/venv/bin/expand_net", tiny, "--replicate", "conv2=1", "-o", out_dir])
    assert expand_main() == 2
    err = capsys.readouterr().err
    assert err.startswith("expand_net: gradual DropIn needs --dropin-length L") and "None" not in err, err
    monkeypatch.setattr("sys.argv", ["/venv/bin/expand_net", "--help"])
    assert expand_main() == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert help_text.startswith("usage: expand_net [-h]")
    assert "iterations for a new layer to enter; required with --replicate and --widen unless --no-dropin" in help_text


def test_refusal_into_a_directory_that_does_not_exist_creates_nothing(tiny, tmp_path):
    missing = tmp_path / "new" / "out"
    refused([tiny, "--replicate", "conv22=1"] + DL, str(missing), "conv22")
    assert not (tmp_path / "new").exists()


@pytest.mark.parametrize("clash", ["layer", "blob"])
def test_replica_name_taken_by_the_net(clash, write, out_dir):
    if clash == "layer":  # a layer of the net is already called conv2_1 (the first replica's name)
        text = TINY.replace('name: "pool2"', 'name: "conv2_1"')
        taken = "conv2_1"
    else:  # a blob of the net is already called conv2_1_dropin (the first DropIn's top)
        text = TINY.replace('top: "pool2"', 'top: "conv2_1_dropin"').replace('bottom: "pool2"',
                                                                            'bottom: "conv2_1_dropin"')
        taken = "conv2_1_dropin"
    net = write("taken.prototxt", text)
    refused([net, "--replicate", "conv2=2"] + DL, out_dir, "'%s'" % taken, "already used")


def test_malformed_net_names_file_line_and_column(write, out_dir):
    text = 'name: "broken"\nlayer { name: "conv1" type: "Convolution"\n  bottom: "data" top: }\n'
    net = write("broken.prototxt", text)
    column = text.splitlines()[2].index("}") + 1
    refused([net, "--replicate", "conv1=1"] + DL, out_dir, "%s:3:%d:" % (net, column), 'got "}"')


def test_malformed_solver_names_file_line_and_column(tiny, write, out_dir):
    solver = write("bad_solver.prototxt", 'net: "tiny.prototxt"\nbase_lr: 0.01\nmax_iter 100\n')
    refused([tiny, "--replicate", "conv2=1", "--solver", solver] + DL, out_dir, "%s:3:10:" % solver)


def test_unterminated_string(write, out_dir):
    net = write("open.prototxt", 'name: "open\n')
    refused([net, "--replicate", "x=1"] + DL, out_dir, "%s:1:7:" % net, "unterminated string")


def test_solver_with_separate_train_and_test_nets(tiny, write, out_dir):
    solver = write("split_solver.prototxt", 'train_net: "a.prototxt"\ntest_net: "b.prototxt"\nbase_lr: 0.1\n')
    refused([tiny, "--replicate", "conv2=1", "--solver", solver] + DL, out_dir, "train_net", "net:")


def test_v1_net_mixing_layer_and_layers(write, out_dir):
    text = V1_NET + '    layer { name: "relu2" type: "ReLU" bottom: "ip" top: "ip" }\n'
    net = write("mixed.prototxt", text)
    refused([net, "--replicate", "conv1=1"] + DL, out_dir, "mixes `layer` and `layers`", "1 `layer`", "3 `layers`")


@pytest.mark.caffe
def test_database_input_without_a_shape(tmp_path, out_dir):
    """The stock LeNet reads MNIST from an LMDB that is not here: its shape is given only where a rewrite
    needs it (a pooling replica); a conv replica does not, so validation falls back to shape inference
    with a note (issue 24)."""
    net = os.path.join(STOCK_MNIST, "lenet_train_test.prototxt")
    refused([net, "--replicate", "pool1=1"] + DL, out_dir, "--input-shape", "data")
    code, out, err = expand_net(net, "--replicate", "conv2=1", *DL, "-q", "-o", out_dir)
    assert code == 0, err
    assert "note: Caffe cannot build the net here (Data 'mnist': its source is not here, so Caffe cannot read the " \
           "shape of 'data'; give it with --input-shape data=C,H,W" in err, err


@pytest.mark.caffe
def test_database_input_that_is_here_gives_its_shape(tmp_path, out_dir):
    """Issue 22.5: a Data layer whose LMDB is here: its first datum's shape (cropped) is read, as
    export_net does, with a note; the net is expanded and validated at that shape."""
    import lmdb
    from caffe.proto import caffe_pb2

    database = lmdb.open(str(tmp_path / "train_lmdb"), map_size=1 << 22)
    with database.begin(write=True) as txn:
        for key in range(3):
            datum = caffe_pb2.Datum(channels=1, height=14, width=14, data=bytes(196), label=key % 3)
            txn.put(b"%08d" % key, datum.SerializeToString())
    database.close()
    data = ('layer { name: "data" type: "Data" top: "data" top: "label" transform_param { crop_size: 12 scale: 0.5 }\n'
            '  data_param { source: "%s" batch_size: 4 backend: LMDB } }' % (tmp_path / "train_lmdb"))
    net = tmp_path / "lmdb_net.prototxt"
    net.write_text(re.sub(r'layer \{ name: "data" type: "DummyData".*?\} \} \}', data, textwrap.dedent(TINY),
                          flags=re.S))
    code, out, err = expand_net(str(net), "--replicate", "conv2=1", *DL, "-o", out_dir)
    assert code == 0, err
    assert "note: the shape of 'data', 1x12x12, is read from its database in phase TRAIN (its first datum, as " \
           "Caffe reads it)" in err
    assert re.search(r"^ data +Data +4x1x12x12, 4 ", out, re.M) and "?" not in out, out


def test_existing_output_needs_force(tiny, tiny_solver, out_dir):
    argv = [tiny, "--replicate", "conv2=1", "--solver", tiny_solver, "--no-validate", "-q", "-o", out_dir]
    code, _, err = expand_net(*argv, "--dropin-length", "50")
    assert code == 0, err
    net_path = os.path.join(out_dir, "tiny_dropin.prototxt")
    first = contents(out_dir)
    assert set(first) == {"notes.txt", "tiny_dropin.prototxt", "tiny_solver_dropin.prototxt"}

    line = refused(argv[:-2] + ["--dropin-length", "70"], out_dir, net_path, "exists", "--force")
    assert "solver" not in line  # the first file in the way is named, and it is the net
    assert contents(out_dir) == first

    code, out, err = expand_net(*argv, "--dropin-length", "70", "--force")
    assert code == 0, err
    assert "wrote net %s" % net_path in out.splitlines()
    second = contents(out_dir)
    assert set(second) == set(first)
    assert python_config(layer(prototxt.read(net_path), "conv2_1_dropin"))["length"] == 70
    assert second["notes.txt"] == first["notes.txt"]


def test_existing_solver_output_alone_is_refused(tiny, tiny_solver, out_dir):
    solver_out = os.path.join(out_dir, "tiny_solver_dropin.prototxt")
    with open(solver_out, "w") as stream:
        stream.write("# mine\n")
    refused([tiny, "--replicate", "conv2=1", "--solver", tiny_solver] + DL, out_dir, solver_out, "--force")


def test_existing_drawing_needs_force(tiny, out_dir):
    drawing = os.path.join(out_dir, "net.png")
    with open(drawing, "wb") as stream:
        stream.write(b"not a png")
    refused([tiny, "--replicate", "conv2=1", "--draw", drawing, "--no-validate"] + DL, out_dir, drawing, "--force")


def test_net_and_solver_with_the_same_name_are_refused(tiny, write, tmp_path, out_dir):
    """a/train.prototxt and b/train.prototxt would both become OUT_DIR/train_dropin.prototxt: a duplicate
    output name must be refused before anything is written (not half-written, nor one file over the other)."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    net = write("a/train.prototxt", TINY)
    solver = write("b/train.prototxt", SOLVER % "snaps/tiny")
    refused([net, "--replicate", "conv2=1", "--solver", solver, "--no-validate"] + DL, out_dir,
            "train_dropin.prototxt")
    code, out, err = expand_net(net, "--replicate", "conv2=1", "--solver", solver, "--no-validate", "--force",
                                *DL, "-o", out_dir)
    assert code == 2 and contents(out_dir) == {"notes.txt": b"results of last week\n"}, (out, err)


def test_output_directory_that_is_a_file(tiny, out_dir):
    """-o naming a file (or a path below one) is a bad input like any other, not a traceback."""
    notes = os.path.join(out_dir, "notes.txt")
    refused([tiny, "--replicate", "conv2=1", "--no-validate"] + DL, notes, "notes.txt")
    refused([tiny, "--replicate", "conv2=1", "--no-validate"] + DL, os.path.join(notes, "sub"), "notes.txt")
    assert contents(out_dir) == {"notes.txt": b"results of last week\n"}


def test_drawing_into_a_missing_directory_writes_nothing(tiny, tmp_path, out_dir):
    drawing = str(tmp_path / "figures" / "tiny.png")
    refused([tiny, "--replicate", "conv2=1", "--draw", drawing, "--no-validate"] + DL, out_dir, "figures")
    assert not (tmp_path / "figures").exists()


@pytest.mark.parametrize("where", ["unwritable-folder", "directory"])
def test_drawing_that_cannot_be_written_writes_no_net(where, tiny, tiny_solver, out_dir):
    """The outputs are a set: a drawing that cannot be written (a folder nobody may write, or a
    directory in the drawing's place) leaves the net and solver unwritten too."""
    drawing = "/proc/tiny.png" if where == "unwritable-folder" else os.path.join(out_dir, "tiny.png")
    if where == "directory":
        os.mkdir(drawing)
    line = refused([tiny, "--replicate", "conv2=1", "--solver", tiny_solver, "--draw", drawing] + DL, out_dir,
                   drawing)
    assert ("is a directory" if where == "directory" else "cannot write") in line
    assert not os.path.exists(os.path.join(out_dir, "tiny_dropin.prototxt"))


def test_solver_output_that_is_a_directory_writes_no_net(tiny, tiny_solver, out_dir):
    os.mkdir(os.path.join(out_dir, "tiny_solver_dropin.prototxt"))
    refused([tiny, "--replicate", "conv2=1", "--solver", tiny_solver] + DL, out_dir,
            "tiny_solver_dropin.prototxt", "is a directory")
    assert not os.path.exists(os.path.join(out_dir, "tiny_dropin.prototxt"))


@pytest.mark.caffe
@pytest.mark.parametrize("layer_name, old, new", [
    ("conv1", 'weight_filler { type: "xavier" } } }\n    layer { name: "relu1"',
     'weight_filler { type: "nosuch" } } }\n    layer { name: "relu1"'),
    ("data", 'data_filler { type: "constant" value: 1 }', 'data_filler { type: "Gaussian" value: 1 }'),
    ("ip2", 'num_output: 3 weight_filler { type: "xavier" }', 'num_output: 3 bias_filler { type: "" }'),
])
def test_unknown_filler_type_is_refused_before_caffe_aborts(layer_name, old, new, write, out_dir):
    """Caffe's GetFiller LOG(FATAL)s on a filler type it does not know: the process would abort
    (exit 134, glog lines) while validation builds the net."""
    assert old in TINY
    net = write("filler.prototxt", TINY.replace(old, new))
    refused([net, "--replicate", "conv2=1"] + DL, out_dir, "layer '%s'" % layer_name, "filler type must be one of",
            "xavier", repr(new.split('type: "')[1].split('"')[0]))


@pytest.mark.caffe
def test_caffe_validation_refuses_a_net_caffe_cannot_build(tiny, write, out_dir):
    """Shape inference cannot see that a Python layer's module is missing (here in the TEST phase only);
    building both phases in Caffe can. --no-validate skips that and writes the net."""
    broken = TINY + ('    layer { name: "probe" type: "Python" bottom: "ip2" top: "probe"\n'
                     '      python_param { module: "no_such_module_here" layer: "Probe" } include { phase: TEST } }\n')
    net = write("probe.prototxt", broken)
    refused([net, "--replicate", "conv2=1"] + DL, out_dir, "probe", "no_such_module_here")
    code, out, err = expand_net(net, "--replicate", "conv2=1", "--no-validate", *DL, "-o", out_dir)
    assert code == 0, err
    assert os.path.exists(os.path.join(out_dir, "probe_dropin.prototxt"))


# ---------------------------------------------------------------------------------------------
# Successful runs

@pytest.mark.caffe
def test_dropin_net_and_solver(tiny, tiny_solver, out_dir):
    original_net = open(tiny, "rb").read()
    code, out, err = expand_net(tiny, "--replicate", "conv2=2", "--dropin-length", "50", "--regularize", "drop1=0.5",
                                "--stagger", "10", "--solver", tiny_solver, "--max-iter", "3", "--solver-mode", "CPU",
                                "-q", "-o", out_dir)
    assert code == 0, err
    net_path = os.path.join(out_dir, "tiny_dropin.prototxt")
    solver_path = os.path.join(out_dir, "tiny_solver_dropin.prototxt")
    assert out.splitlines() == ["wrote net %s" % net_path, "wrote solver %s" % solver_path]
    assert sorted(contents(out_dir)) == ["notes.txt", "tiny_dropin.prototxt", "tiny_solver_dropin.prototxt"]
    assert open(tiny, "rb").read() == original_net
    assert all(line.startswith("note: ") for line in err.splitlines())

    # The solver: net points at the emitted net, a new snapshot prefix, the overrides, all else kept.
    original, emitted = prototxt.read(tiny_solver), prototxt.read(solver_path)
    assert emitted.get("net") == os.path.abspath(net_path)
    assert emitted.get("snapshot_prefix") == "snaps/tiny_dropin"
    assert emitted.get("max_iter") == 3
    assert emitted.get("solver_mode") == Enum("CPU")
    changed = {"net", "snapshot_prefix", "max_iter", "solver_mode"}
    assert [f for f in emitted.fields if f[0] not in changed] == [f for f in original.fields if f[0] not in changed]
    assert [f[0] for f in emitted.fields] == [f[0] for f in original.fields]

    # The net: two gradual DropIns after conv2 (staggered), one regularizing DropIn for drop1.
    net = prototxt.read(net_path)
    assert dropin_names(net) == ["conv2_1_dropin", "conv2_2_dropin", "drop1_dropin"]
    configs = [python_config(layer(net, name)) for name in dropin_names(net)]
    assert [c["iter_size"] for c in configs] == [2, 2, 2]  # the solver's iter_size
    assert [(c.get("mode", "gradual"), c.get("length"), c.get("start")) for c in configs[:2]] == [
        ("gradual", 50, 0), ("gradual", 50, 10)]
    assert (configs[2]["mode"], configs[2]["p_new"]) == ("regularize", 0.5)
    assert [layer(net, "conv2_%d_dropin" % i).get_all("bottom") for i in (1, 2)] == [
        ["conv2", "conv2_1"], ["conv2_1_dropin", "conv2_2"]]
    assert layer(net, "conv2_2").get("bottom") == "conv2_1_dropin"
    assert layer(net, "pool2").get("bottom") == "conv2_2_dropin"
    assert layer(net, "ip2").get("bottom") == "drop1_dropin"
    assert "drop1" not in [item.get("name") for item in net.get_all("layer")]
    for name in dropin_names(net):
        spec = layer(net, name).get("param")
        assert (spec.get("lr_mult"), spec.get("decay_mult")) == (0, 0)
        assert layer(net, name).get_all("top") == [name]  # no p top without --p-top
    replica = layer(net, "conv2_1").get("convolution_param")
    assert (replica.get("num_output"), replica.get("kernel_size"), replica.get("pad"), replica.get("stride", 1)) == (
        6, 3, 1, 1)

    # Caffe itself builds the emitted TEST net and runs it: the replicas keep conv2's 4x6x4x4.
    caffe_net = caffe.Net(net_path, caffe.TEST)
    caffe_net.forward()
    assert caffe_net.blobs["conv2_2_dropin"].data.shape == (4, 6, 4, 4)
    assert caffe_net.blobs["drop1_dropin"].data.shape == (4, 8)
    assert "accuracy" in caffe_net.blobs


def test_a_solver_whose_snapshot_folder_is_missing_gets_a_note(tiny, tiny_solver, out_dir, tmp_path, monkeypatch):
    """Issue 22.4: `caffe train` aborts on a snapshot_prefix in a folder that does not exist; a
    relative one is read from the folder caffe train runs in (here: this one)."""
    monkeypatch.chdir(str(tmp_path))
    code, out, err = expand_net(tiny, "--replicate", "conv2=1", *DL, "--solver", tiny_solver, "-o", out_dir)
    assert code == 0 and os.path.exists(os.path.join(out_dir, "tiny_solver_dropin.prototxt")), err
    assert ("note: the solver's snapshot_prefix is in folder snaps (relative to the folder `caffe train` runs in; "
            "from here %s), which does not exist: `caffe train` would stop with \"Cannot write to snapshot prefix\"; "
            "create it (mkdir -p snaps) or change snapshot_prefix\n" % (tmp_path / "snaps")) in err
    (tmp_path / "snaps").mkdir()
    code, out, err = expand_net(tiny, "--replicate", "conv2=1", *DL, "--solver", tiny_solver, "-o", out_dir, "--force")
    assert code == 0 and "snapshot_prefix" not in err, err


def test_plain_baseline(tiny, tiny_solver, out_dir):
    code, out, err = expand_net(tiny, "--replicate", "conv2=2", "--no-dropin", "--solver", tiny_solver, "-q",
                                "-o", out_dir)
    assert code == 0, err
    assert sorted(contents(out_dir)) == ["notes.txt", "tiny_plain.prototxt", "tiny_solver_plain.prototxt"]
    net = prototxt.read(os.path.join(out_dir, "tiny_plain.prototxt"))
    assert [item.get("type") for item in net.get_all("layer")].count("Python") == 0
    assert [(layer(net, n).get("bottom"), layer(net, n).get("top")) for n in ("conv2_1", "conv2_2", "pool2")] == [
        ("conv2", "conv2_1"), ("conv2_1", "conv2_2"), ("conv2_2", "pool2")]
    solver = prototxt.read(os.path.join(out_dir, "tiny_solver_plain.prototxt"))
    assert solver.get("snapshot_prefix") == "snaps/tiny_plain"
    assert solver.get("net") == os.path.join(out_dir, "tiny_plain.prototxt")
    assert (solver.get("max_iter"), solver.get("solver_mode")) == (100, Enum("GPU"))


@pytest.mark.caffe
def test_dropin_train_blend_goes_into_every_gradual_dropin(tiny, out_dir):
    code, _, err = expand_net(tiny, "--replicate", "conv2=2", "--regularize", "drop1=0.8", "--dropin-train", "blend",
                              "-q", *DL, "-o", out_dir)
    assert code == 0, err
    net = prototxt.read(os.path.join(out_dir, "tiny_dropin.prototxt"))
    configs = {name: python_config(layer(net, name)) for name in dropin_names(net)}
    assert {name: config.get("train") for name, config in configs.items()} == {
        "conv2_1_dropin": "blend", "conv2_2_dropin": "blend", "drop1_dropin": None}  # regularizing: unchanged
    caffe_net = caffe.Net(os.path.join(out_dir, "tiny_dropin.prototxt"), caffe.TRAIN)
    caffe_net.forward()


def test_gpu_solver_gets_a_note_about_python_layers(tiny, tiny_solver, out_dir):
    code, _, err = expand_net(tiny, "--replicate", "conv2=1", "--solver", tiny_solver, "--no-validate", "-q",
                              *DL, "-o", out_dir)
    assert code == 0
    notes = [line for line in err.splitlines() if "GPU" in line]
    assert len(notes) == 1 and notes[0].startswith("note: ") and "python/train.py" in notes[0]


@pytest.mark.caffe
def test_p_top_outputs_p_with_loss_weight_zero(tiny, out_dir):
    code, _, err = expand_net(tiny, "--replicate", "conv2=1", "--regularize", "drop1=0.8", "--p-top", "-q", *DL,
                              "-o", out_dir)
    assert code == 0, err
    net = prototxt.read(os.path.join(out_dir, "tiny_dropin.prototxt"))
    for name in ("conv2_1_dropin", "drop1_dropin"):
        assert layer(net, name).get_all("top") == [name, name + "_p"]
        assert layer(net, name).get_all("loss_weight") == [0, 0]
    caffe_net = caffe.Net(os.path.join(out_dir, "tiny_dropin.prototxt"), caffe.TRAIN)
    outputs = caffe_net.forward()
    assert float(outputs["conv2_1_dropin_p"][0]) == 0.0  # iteration 0 of the gradual schedule
    assert float(outputs["drop1_dropin_p"][0]) == pytest.approx(0.8)


def conv_params(c_in, c_out, k):
    return c_in * c_out * k * k + c_out


def test_summary_table(tiny, out_dir):
    code, out, err = expand_net(tiny, "--replicate", "conv2=2", "--regularize", "drop1=0.5", *DL, "-o", out_dir)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[-1].startswith("wrote net ")
    rows = {}
    for line in lines[1:]:
        cells = line.split()
        if line.startswith(("original:", "wrote ")) or not cells:
            continue
        rows[cells[0].lstrip("*")] = (line[0], cells[1], " ".join(cells[2:-1]), cells[-1])
    # Every layer of the expanded TRAIN net, in order (accuracy is TEST only).
    net = prototxt.read(os.path.join(out_dir, "tiny_dropin.prototxt"))
    train_layers = [item.get("name") for item in net.get_all("layer") if item.get("name") != "accuracy"]
    assert list(rows) == train_layers
    assert rows["data"][2] == "4x1x12x12, 4"
    assert rows["conv1"][2] == rows["relu1"][2] == "4x4x10x10"
    assert rows["conv2"][2] == rows["conv2_1"][2] == rows["conv2_2_dropin"][2] == "4x6x4x4"
    assert rows["pool2"][2] == "4x6x2x2"
    assert rows["ip1"][2] == rows["drop1_dropin"][2] == "4x8"
    assert rows["ip2"][2] == "4x3"
    assert rows["loss"][2] == "scalar"
    assert (rows["conv2_1"][3], rows["ip1"][3]) == (str(conv_params(6, 6, 3)), str(24 * 8 + 8))
    marked = sorted(name for name, row in rows.items() if row[0] == "*")
    assert marked == sorted(["conv2_1_dropin", "conv2_2_dropin", "drop1_dropin"] +
                            [n for n, row in rows.items() if row[1] == "Resize"])
    assert [row[1] for name, row in rows.items() if name.endswith("_dropin")] == ["DropIn"] * 3
    before = conv_params(1, 4, 3) + conv_params(4, 6, 3) + (24 * 8 + 8) + (8 * 3 + 3)
    after = before + 2 * conv_params(6, 6, 3)
    totals = [line for line in lines if line.startswith("original:")]
    assert totals == ["original: 4 weight layers, %s parameters; expanded: 6 weight layers, %s parameters, "
                      "%d DropIn/Resize layers (*)" % ("{:,}".format(before), "{:,}".format(after), len(marked))]


def test_quiet_prints_only_what_was_written(tiny, out_dir):
    code, out, _ = expand_net(tiny, "--replicate", "conv2=1", "--no-validate", "-q", *DL, "-o", out_dir)
    assert code == 0
    assert out.splitlines() == ["wrote net %s" % os.path.join(out_dir, "tiny_dropin.prototxt")]


@pytest.mark.parametrize("extension, magic", [(".png", b"\x89PNG\r\n\x1a\n"), (".svg", b"<svg")])
def test_draw(extension, magic, tiny, out_dir):
    drawing = os.path.join(out_dir, "tiny" + extension)
    code, out, err = expand_net(tiny, "--replicate", "conv2=2", "--draw", drawing, "--no-validate", "-q", *DL,
                                "-o", out_dir)
    assert code == 0, err
    assert out.splitlines()[-1] == "wrote drawing %s" % drawing
    data = open(drawing, "rb").read()
    assert len(data) > 1000 and magic in data[:400]
    assert sorted(contents(out_dir)) == sorted(["notes.txt", "tiny_dropin.prototxt", "tiny" + extension])


@pytest.mark.caffe
def test_v1_net_is_upgraded_and_expanded(write, out_dir):
    net = write("old.prototxt", V1_NET)
    code, out, err = expand_net(net, "--replicate", "conv1=1", "--add-activation", "relu", "-q", *DL, "-o", out_dir)
    assert code == 0, err
    emitted = prototxt.read(os.path.join(out_dir, "old_dropin.prototxt"))
    assert emitted.get_all("layers") == [] and "input" not in emitted and "input_dim" not in emitted
    kinds = [(item.get("name"), item.get("type")) for item in emitted.get_all("layer")]
    # Caffe's own upgrade turns `input:` into an Input layer called "input" whose top is the input's name.
    assert kinds[:4] == [("input", "Input"), ("conv1", "Convolution"), ("relu1", "ReLU"), ("conv1_1", "Convolution")]
    assert kinds[-2:] == [("conv1_1_dropin", "Python"), ("ip", "InnerProduct")]
    assert layer(emitted, "input").get("top") == "data"
    assert layer(emitted, "input").get("input_param").get("shape").get_all("dim") == [2, 1, 10, 10]
    assert layer(emitted, "ip").get("bottom") == "conv1_1_dropin"
    # The replica brings its own copy of the ReLU that follows conv1 (not a second one from --add-activation).
    assert [item.get("type") for item in emitted.get_all("layer")].count("ReLU") == 2
    assert [p.get("lr_mult") for p in layer(emitted, "conv1").get_all("param")] == [1, 2]
    caffe_net = caffe.Net(os.path.join(out_dir, "old_dropin.prototxt"), caffe.TEST)
    assert caffe_net.forward()["ip"].shape == (2, 2)


FORK_LAYER = """\
    layer { name: "zoom" type: "Interp" bottom: "conv2" top: "zoom"
      interp_param { zoom_factor: 2 pad_beg: 0 }
      fork_only_field: "kept as it came" }
"""


@pytest.mark.parametrize("with_fields", [True, False], ids=["fork-type-and-fields", "fork-type-only"])
def test_fork_layer_after_the_replica_is_carried_through(with_fields, write, out_dir):
    """A layer type (and fields) this Caffe does not know, after the replicated layer: kept untouched but
    for its rewired bottom; its output and everything after it shows "?" in the table."""
    fork = FORK_LAYER if with_fields else '    layer { name: "zoom" type: "Interp" bottom: "conv2" top: "zoom" }\n'
    text = TINY.replace('bottom: "conv2" top: "pool2"', 'bottom: "zoom" top: "pool2"')
    text = text.replace('    layer { name: "pool2"', fork + '    layer { name: "pool2"')
    net = write("fork.prototxt", text)
    code, out, err = expand_net(net, "--replicate", "conv2=1", *DL, "-o", out_dir)
    assert code == 0, err
    assert "note: " in err
    emitted = prototxt.read(os.path.join(out_dir, "fork_dropin.prototxt"))
    original = layer(prototxt.read(net), "zoom")
    carried = layer(emitted, "zoom")
    assert carried.get("bottom") == "conv2_1_dropin"
    carried.set("bottom", "conv2")
    assert carried == original
    rows = {line.split()[0].lstrip("*"): line for line in out.splitlines()[1:] if not line.startswith(
        ("original:", "wrote ")) and line.split()}
    assert "4x6x4x4" in rows["conv2_1_dropin"]
    for name in ("zoom", "pool2", "ip1", "ip2"):
        assert rows[name].split()[2] == "?", rows[name]
    assert any("unknown shape (?)" in line for line in out.splitlines())


def test_a_typo_in_a_field_is_refused_unless_the_net_is_a_forks(write, out_dir):
    """Issue 22.8: `num_outptu` is one typo from num_output; in a net Caffe would otherwise accept it
    is an error, not a fork's field. Beside a fork's own fields it is carried through as they are."""
    typo = TINY.replace("num_output: 6", "num_outptu: 6")
    refused([write("typo.prototxt", typo), "--replicate", "conv1=1"] + DL, out_dir,
            "layer 'conv2': convolution_param has no field num_outptu (Caffe would reject the net); did you mean "
            "num_output?")
    fork = typo.replace('    layer { name: "pool2"', FORK_LAYER + '    layer { name: "pool2"').replace(
        'bottom: "conv2" top: "pool2"', 'bottom: "zoom" top: "pool2"')
    code, out, err = expand_net(write("fork.prototxt", fork), "--replicate", "conv1=1", *DL, "-o", out_dir)
    assert code == 0 and "has field convolution_param.num_outptu, which this Caffe does not know" in err, err


@pytest.mark.caffe
def test_stock_lenet_and_its_solver(out_dir):
    """Caffe's own LeNet files: the LMDB's shape given, both phases built in Caffe (DummyData standing in
    for the missing LMDB), the solver's paths and snapshot prefix rewritten, all else as it was."""
    net = os.path.join(STOCK_MNIST, "lenet_train_test.prototxt")
    solver = os.path.join(STOCK_MNIST, "lenet_solver.prototxt")
    code, out, err = expand_net(net, "--input-shape", "data=1,28,28", "--replicate", "conv2=2", "--replica-kernel", "3",
                                "--dropin-length", "1000", "--solver", solver, "--max-iter", "20", "-o", out_dir)
    assert code == 0, err
    assert re.search(r"^\*conv2_2_dropin +DropIn +64x50x8x8\b", out, re.M), out
    emitted_net = prototxt.read(os.path.join(out_dir, "lenet_train_test_dropin.prototxt"))
    assert dropin_names(emitted_net) == ["conv2_1_dropin", "conv2_2_dropin"]
    assert [python_config(layer(emitted_net, n))["iter_size"] for n in dropin_names(emitted_net)] == [1, 1]
    assert layer(emitted_net, "pool2").get("bottom") == "conv2_2_dropin"
    assert [item.get("name") for item in emitted_net.get_all("layer") if item.get("type") == "Data"] == [
        "mnist", "mnist"]  # the data layers are kept as they are, sources and all
    emitted = prototxt.read(os.path.join(out_dir, "lenet_solver_dropin.prototxt"))
    original = prototxt.read(solver)
    assert emitted.get("net") == os.path.join(out_dir, "lenet_train_test_dropin.prototxt")
    assert emitted.get("snapshot_prefix") == "examples/mnist/lenet_dropin"
    assert emitted.get("max_iter") == 20 and emitted.get("solver_mode") == Enum("GPU")
    changed = {"net", "snapshot_prefix", "max_iter"}
    assert [f for f in emitted.fields if f[0] not in changed] == [f for f in original.fields if f[0] not in changed]
    assert [line for line in err.splitlines() if "GPU" in line]


def test_template_and_preset(out_dir):
    """A built-in net as it is (no rewrite: no suffix), then the lenet-deep preset."""
    code, out, err = expand_net("--template", "lenet", "-q", "-o", out_dir)
    assert code == 0, err
    assert sorted(contents(out_dir)) == ["lenet.prototxt", "lenet_solver.prototxt", "notes.txt"]
    stock = prototxt.read(os.path.join(out_dir, "lenet.prototxt"))
    assert dropin_names(stock) == [] and layer(stock, "conv2").get("top") == "conv2"
    assert prototxt.read(os.path.join(out_dir, "lenet_solver.prototxt")).get("net") == os.path.join(
        out_dir, "lenet.prototxt")

    code, out, err = expand_net("--preset", "lenet-deep", "--depth", "2", "--p-top", "-q", "-o", out_dir)
    assert code == 0, err
    assert sorted(contents(out_dir)) == ["lenet.prototxt", "lenet_deep_dropin.prototxt",
                                         "lenet_deep_solver_dropin.prototxt", "lenet_solver.prototxt", "notes.txt"]
    deep = prototxt.read(os.path.join(out_dir, "lenet_deep_dropin.prototxt"))
    assert dropin_names(deep) == ["conv2_1_dropin", "conv2_2_dropin"]
    assert [python_config(layer(deep, n))["length"] for n in dropin_names(deep)] == [1000, 1000]
    assert [layer(deep, "conv2_%d" % i).get("convolution_param").get("kernel_size") for i in (1, 2)] == [3, 3]
    assert layer(deep, "conv2_1_dropin").get_all("top") == ["conv2_1_dropin", "conv2_1_dropin_p"]
    solver = prototxt.read(os.path.join(out_dir, "lenet_deep_solver_dropin.prototxt"))
    assert solver.get("net") == os.path.join(out_dir, "lenet_deep_dropin.prototxt")
    assert solver.get("snapshot_prefix").endswith("_dropin")


def test_template_with_dummy_data(out_dir):
    """--set dummy_data=true: the template's DummyData layers declare N,C,H,W, and the C,H,W the CLI
    knows for the template must agree with them."""
    code, out, err = expand_net("--template", "lenet", "--set", "dummy_data=true", "--set", "train_batch_size=8",
                                "--replicate", "conv2=1", "--dropin-length", "100", "-o", out_dir)
    assert code == 0, err
    net = prototxt.read(os.path.join(out_dir, "lenet_dropin.prototxt"))
    dummies = [item for item in net.get_all("layer") if item.get("type") == "DummyData"]
    assert [d.get("dummy_data_param").get("shape").get_all("dim") for d in dummies] == [[8, 1, 28, 28],
                                                                                        [100, 1, 28, 28]]
    assert re.search(r"^ conv2_1 +Convolution +8x50x8x8\b", out, re.M), out


def test_input_shape_as_channels_height_width(tiny, out_dir):
    """--input-shape BLOB=C,H,W that agrees with a DummyData layer's own N,C,H,W is accepted."""
    code, out, err = expand_net(tiny, "--input-shape", "data=1,12,12", "--replicate", "conv2=1", *DL, "-o", out_dir)
    assert code == 0, err
    assert re.search(r"^ conv2_1 +Convolution +4x6x4x4\b", out, re.M), out


def test_entry_point(tiny, tmp_path):
    """tools/expand_net.py as a shell runs it: --help exits 0, a bad input exits 2 with its one line."""
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools", "expand_net.py")
    shown = subprocess.run(["python3", script, "--help"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           universal_newlines=True, timeout=60)
    assert shown.returncode == 0 and "--replicate LAYER=K" in shown.stdout and "lenet-deep" in shown.stdout
    bad = subprocess.run(["python3", script, tiny, "--replicate", "conv2=0", "--dropin-length", "5",
                          "-o", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=60)
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines()[-1].startswith("expand_net.py: --replicate conv2=0")
    assert not (tmp_path / "out").exists()


P_LOGGED = re.compile(r"\] +Train net output #\d+: (conv2_\d_dropin_p) = (\S+)")
ITERATION = re.compile(r"\] Iteration (\d+)")


@pytest.mark.caffe
def test_caffe_train_runs_the_emitted_net(write, tmp_path, out_dir):
    """The emitted net and solver under `caffe train`: it trains, logs p per DropIn (iteration i of a
    solver with iter_size 2 logs p = i / L, since the DropIn counts iterations, not passes), and
    snapshots under the new prefix."""
    net = write("tiny.prototxt", TINY)
    solver = write("tiny_solver.prototxt", SOLVER % str(tmp_path / "snap" / "tiny"))
    (tmp_path / "snap").mkdir()
    code, _, err = expand_net(net, "--replicate", "conv2=2", "--dropin-length", "50", "--stagger", "1", "--p-top",
                              "--solver", solver, "--max-iter", "3", "--solver-mode", "CPU", "-q", "-o", out_dir)
    assert code == 0, err
    environ = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    run = subprocess.run(["caffe", "train", "--solver=%s" % os.path.join(out_dir, "tiny_solver_dropin.prototxt")],
                         cwd=str(tmp_path), env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         universal_newlines=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    logged = {}
    iteration = None
    for line in run.stderr.splitlines():
        found = ITERATION.search(line)
        if found:
            iteration = int(found.group(1))
        found = P_LOGGED.search(line)
        if found:
            logged[(iteration, found.group(1))] = float(found.group(2))
    # Layer 1 starts at 0, layer 2 (stagger 1) at iteration 1.
    assert logged == {(i, "conv2_%d_dropin_p" % k): pytest.approx(max(0, i - (k - 1)) / 50.0)
                      for i in range(3) for k in (1, 2)}
    assert os.path.exists(str(tmp_path / "snap" / "tiny_dropin_iter_3.caffemodel"))


# ---------------------------------------------------------------------------------------------
# Nets users bring (issue 8)

def test_widen_grows_a_layer_and_notes_its_consumers(tiny, out_dir):
    """--widen conv1=6 --widen ip1=12: each layer keeps its units, an extra layer and a DropIn join
    bring the rest; conv2 and ip2 are built for the wider inputs, and a note says so."""
    code, out, err = expand_net(tiny, "--widen", "conv1=6", "--widen", "ip1=12", "--dropin-length", "50", "--p-top",
                                "-o", out_dir)
    assert code == 0, err
    net = prototxt.read(os.path.join(out_dir, "tiny_dropin.prototxt"))
    assert layer(net, "conv2").get_all("bottom") == ["conv1_widen"]
    assert layer(net, "ip2").get_all("bottom") == ["ip1_widen"]
    assert layer(net, "ip1_wide").get_all("bottom") == ["ip1", "ip1_extra"]
    assert [item.get("name") for item in net.get_all("layer")][10:16] == [
        "ip1", "relu3", "drop1", "ip1_extra", "ip1_extra_relu", "ip1_extra_dropout"]  # followers copied
    assert dropin_names(net) == ["conv1_widen", "ip1_widen"]
    assert python_config(layer(net, "ip1_widen")) == {"name": "ip1_widen", "length": 50, "iter_size": 1}
    assert "note: --widen conv1=6: conv2 reads 6 channels instead of 4, so Caffe gives it more input weights; a " \
           "--weights file trained before the widening cannot load it" in err
    assert "note: --widen ip1=12: ip2 reads 12 channels instead of 8" in err
    assert re.search(r"conv1_widen +DropIn +4x6x10x10, 1 ", out)
    assert re.search(r"conv2 +Convolution +4x6x4x4 +330\b", out)  # 6 * 6 * 3 * 3 weights + 6 biases


def test_regularize_prev_is_named_and_may_be_chosen(tiny, out_dir):
    """Issue 8.3: a note names prev and its shape every time; --regularize DROP=P:BLOB chooses it."""
    code, out, err = expand_net(tiny, "--regularize", "drop1=0.5", "-q", "-o", out_dir)
    assert code == 0, err
    assert "note: --regularize drop1: prev is 'pool2' (4, 6, 2, 2), the nearest blob before InnerProduct 'ip1' " \
           "that every path from the net's inputs passes through; resized to (4, 8) by a Resize layer" in err
    code, out, err = expand_net(tiny, "--regularize", "drop1=0.25:conv1", "-q", "--force", "-o", out_dir)
    assert code == 0, err
    assert "note: --regularize drop1: prev is 'conv1' (4, 4, 10, 10), as given; resized to (4, 8)" in err
    emitted = prototxt.read(os.path.join(out_dir, "tiny_dropin.prototxt"))
    assert layer(emitted, "drop1_dropin").get_all("bottom") == ["conv1_flat_resized", "ip1"]
    assert python_config(layer(emitted, "drop1_dropin"))["p_new"] == 0.25


# A pose-style deploy net: its input is a 1x1 placeholder the application resizes before use.
PLACEHOLDER = """\
    name: "pose"
    layer { name: "image" type: "Input" top: "image" input_param { shape { dim: 1 dim: 3 dim: 1 dim: 1 } } }
    layer { name: "conv1" type: "Convolution" bottom: "image" top: "conv1"
      convolution_param { num_output: 4 kernel_size: 3 pad: 1 } }
    layer { name: "relu1" type: "ReLU" bottom: "conv1" top: "conv1" }
    layer { name: "pool1" type: "Pooling" bottom: "conv1" top: "pool1"
      pooling_param { pool: MAX kernel_size: 2 stride: 2 } }
    layer { name: "stage1" type: "Convolution" bottom: "pool1" top: "stage1"
      convolution_param { num_output: 5 kernel_size: 3 pad: 1 } }
"""


@pytest.mark.caffe
@pytest.mark.parametrize("given", ["1,3,16,16", "3,16,16"])
def test_input_shape_wins_over_a_declared_placeholder(given, write, out_dir):
    """Issue 8.7: a deploy net's declared input is a placeholder; --input-shape replaces it, with a note,
    and the expanded net is built in Caffe at that shape (the emitted Input keeps its own)."""
    net = write("pose.prototxt", PLACEHOLDER)
    drawing = os.path.join(out_dir, "pose.svg")
    code, out, err = expand_net(net, "--input-shape", "image=" + given, "--replicate", "conv1=1", *DL, "-o", out_dir,
                                "--draw", drawing)
    assert code == 0, err
    assert "note: --input-shape image=1,3,16,16 replaces the shape (1, 3, 1, 1) that Input 'image' declares in the " \
           "summary, the validation and the drawing; the emitted net keeps its declaration\n" in err
    svg = open(drawing).read().replace("&#45;", "-")  # issue 22.7: drawn at the given shape, saying what
    assert ">declares 1x3x1x1; drawn at --input-shape<" in svg and "> 1x3x16x16 <" in svg  # the file declares
    assert re.search(r"^ stage1 +Convolution +1x5x8x8\b", out, re.M), out
    assert "not built" not in err and "shape inference only" not in err
    emitted = prototxt.read(os.path.join(out_dir, "pose_dropin.prototxt"))
    assert layer(emitted, "image").get("input_param").get("shape").get_all("dim") == [1, 3, 1, 1]
    refused([net, "--replicate", "conv1=1"] + DL, out_dir, "kernel 2 is larger than the padded input 1")


@pytest.mark.caffe
def test_forks_ceil_mode_is_inferred_and_validated(write, out_dir):
    """Issue 8.2: `ceil_mode: false` floors (7 -> 3, not 4), the emitted net keeps the fork's field, and
    validation still builds it in this Caffe (translated to round_mode)."""
    text = PLACEHOLDER.replace("dim: 1 dim: 1 }", "dim: 13 dim: 13 }").replace(
        "kernel_size: 2 stride: 2 }", "kernel_size: 2 stride: 2 ceil_mode: false }")
    net = write("floor.prototxt", text)
    code, out, err = expand_net(net, "--replicate", "stage1=1", *DL, "-o", out_dir)
    assert code == 0, err
    assert re.search(r"^ pool1 +Pooling +1x4x6x6\b", out, re.M), out  # 13x13: floor(11/2)+1 = 6, ceil 7
    assert "not built" not in err and "shape inference only" not in err
    emitted = prototxt.read(os.path.join(out_dir, "floor_dropin.prototxt"))
    assert layer(emitted, "pool1").get("pooling_param").get("ceil_mode") is False


# ---------------------------------------------------------------------------------------------
# Deep thin stacks (issue 15): --width, --length-growth, a large --depth

def test_width_and_tailored_lengths_reach_the_written_net(out_dir):
    code, out, err = expand_net("--preset", "lenet-deep", "--depth", "4", "--width", "8", "--dropin-length", "100",
                                "--length-growth", "1.5", "--stagger", "30", "-o", out_dir)
    assert code == 0, err
    assert re.search(r"^ conv2_4 +Convolution +64x8x8x8 +584\b", out, re.M), out  # 8 * 8 * 3 * 3 + 8
    assert re.search(r"^ ip1 +InnerProduct +64x500 +64,500\b", out, re.M), out  # 500 * 4 * 4 * 8 + 500
    deep = prototxt.read(os.path.join(out_dir, "lenet_deep_dropin.prototxt"))
    configs = [python_config(layer(deep, n)) for n in dropin_names(deep)]
    assert [(c["length"], c["start"]) for c in configs] == [(100, 0), (150, 30), (225, 60), (338, 90)]


@pytest.mark.caffe
def test_a_deep_thin_net_trains_under_caffe_and_every_p_moves(tmp_path, out_dir):
    """lenet-deep at depth 20, width 8, staggered with tailored lengths, under the real `caffe train`:
    every one of the 20 DropIns logs a p that rises over 40 iterations, to the value its schedule gives."""
    from dropin_caffe.experiments.logs import parse_log

    code, _, err = expand_net("--preset", "lenet-deep", "--depth", "20", "--width", "8", "--dropin-length", "20",
                              "--length-growth", "1.05", "--stagger", "1", "--p-top", "--set", "dummy_data=true",
                              "--set", "train_batch_size=16", "--set", "test_batch_size=4", "-q", "-o", out_dir)
    assert code == 0, err
    net = os.path.join(out_dir, "lenet_deep_dropin.prototxt")
    solver = str(tmp_path / "deep_solver.prototxt")
    with open(solver, "w") as f:
        f.write('net: "%s"\nbase_lr: 0.01\nlr_policy: "fixed"\nmomentum: 0.9\nmax_iter: 40\ntest_iter: 1\n'
                'test_interval: 1000\ntest_initialization: false\ndisplay: 1\nsolver_mode: CPU\n'
                'snapshot_prefix: "%s"\n' % (net, tmp_path / "deep"))
    environ = dict(os.environ, GLOG_minloglevel="0", GLOG_logtostderr="1")
    run = subprocess.run(["caffe", "train", "--solver=" + solver], cwd=str(tmp_path), env=environ,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    log = parse_log(run.stderr)
    assert log.finished
    p = {name: values for (_, name), values in log.outputs("train").items() if name.endswith("_dropin_p")}
    assert sorted(p) == sorted("conv2_%d_dropin_p" % i for i in range(1, 21))
    for i in range(1, 21):  # DropIn i starts at i - 1 with length round(20 * 1.05 ** (i - 1))
        values = p["conv2_%d_dropin_p" % i]
        length = round(20 * 1.05 ** (i - 1))
        assert values[39] > values[0] and values[39] == pytest.approx(min(1, (39 - (i - 1)) / length), abs=1e-6)
