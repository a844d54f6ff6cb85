"""netgen/draw.py: the DOT text of a net, rendered by Graphviz's dot and read back as SVG.

The nets are written here: a 150-layer residual net (conv-BN-ReLU blocks joined by Eltwise sums)
and an inception-like net (Concat of three branches), both expanded so that DropIn layers are in
them. The SVG is checked for what made the old drawings hard to read: edge labels over boxes,
edge labels over each other, skip edges in the highlight colour.
"""
import io
import os
import re
import xml.etree.ElementTree as ElementTree

import pytest

from dropin_caffe.cli.expand_net import main as expand_main
from dropin_caffe.netgen import draw
from dropin_caffe.netgen import shapes as inference
from dropin_caffe.netgen.expand import expand_net

SVG = "{http://www.w3.org/2000/svg}"
HIGHLIGHTS = {draw.COLOURS["DropIn"], draw.COLOURS["Resize"]}

pytestmark = pytest.mark.skipif(draw.dot_path() is None, reason="needs Graphviz's dot")

DATA = """\
name: "%s"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 2 dim: 8 dim: 8 dim: 8 } shape { dim: 2 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 1 } } }
"""
TAIL = """\
layer { name: "ip" type: "InnerProduct" bottom: "%s" top: "ip"
  inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def conv(name, bottom, outputs=8, kernel=3):
    return ('layer { name: "%s" type: "Convolution" bottom: "%s" top: "%s"\n'
            '  convolution_param { num_output: %d kernel_size: %d pad: %d weight_filler { type: "xavier" } } }\n'
            % (name, bottom, name, outputs, kernel, kernel // 2))


def in_place(name, kind, blob):
    return 'layer { name: "%s" type: "%s" bottom: "%s" top: "%s" }\n' % (name, kind, blob, blob)


def residual_net(blocks=21):
    """data, a conv-BN-ReLU stem, `blocks` blocks of 7 layers (conv-BN-ReLU, conv-BN, Eltwise sum
    with the block's input, ReLU), ip, loss: 154 layers at 21 blocks."""
    text = DATA % "residual" + conv("stem", "data") + in_place("stem_bn", "BatchNorm", "stem") + \
        in_place("stem_relu", "ReLU", "stem")
    previous = "stem"
    for block in range(1, blocks + 1):
        a, b, join = "res%da" % block, "res%db" % block, "res%d" % block
        text += conv(a, previous) + in_place(a + "_bn", "BatchNorm", a) + in_place(a + "_relu", "ReLU", a)
        text += conv(b, a) + in_place(b + "_bn", "BatchNorm", b)
        text += ('layer { name: "%s" type: "Eltwise" bottom: "%s" bottom: "%s" top: "%s" '
                 'eltwise_param { operation: SUM } }\n' % (join, previous, b, join))
        text += in_place(join + "_relu", "ReLU", join)
        previous = join
    return text + TAIL % previous


def branching_net(modules=2):
    """Inception-like modules: 1x1, 1x1-3x3 and 1x1-5x5 branches joined by a Concat."""
    text, previous = DATA % "branching", "data"
    for module in range(1, modules + 1):
        m = "m%d" % module
        text += conv(m + "_1x1", previous, 4, 1)
        text += conv(m + "_3x3_reduce", previous, 4, 1) + conv(m + "_3x3", m + "_3x3_reduce", 4, 3)
        text += conv(m + "_5x5_reduce", previous, 2, 1) + conv(m + "_5x5", m + "_5x5_reduce", 4, 5)
        text += ('layer { name: "%s" type: "Concat" bottom: "%s_1x1" bottom: "%s_3x3" bottom: "%s_5x5" '
                 'top: "%s" }\n' % (m, m, m, m, m))
        previous = m
    return text + TAIL % previous


def expanded(text, replicate):
    """(TRAIN net, its shapes, title) of `text` expanded with `replicate`."""
    expansion = expand_net(text, replicate=replicate, dropin_length=10, validate=False)
    return inference.phase_net(expansion.net, "TRAIN"), expansion.shapes["TRAIN"], expansion.title


def expanded_svg(tmp_path, text, replicate):
    """(SVG root, TRAIN net) of `text` expanded with `replicate`, drawn by dot."""
    net, shapes, title = expanded(text, replicate)
    path = str(tmp_path / "net.svg")
    draw.render(draw.dot_source(net, shapes, title), path)
    return ElementTree.parse(path).getroot(), net


def label_boxes(root):
    """[(text, (x0, y0, x1, y1))] of the edge labels: width ~ 0.6 font size per character, from
    the baseline up by the font size (middle-anchored, as dot writes them)."""
    found = []
    for group in root.iter(SVG + "g"):
        if group.get("class") != "edge":
            continue
        for text in group.iter(SVG + "text"):
            size, x, y = float(text.get("font-size")), float(text.get("x")), float(text.get("y"))
            width = 0.6 * size * len(text.text.strip())
            found.append((text.text.strip(), (x - width / 2, y - size, x + width / 2, y + 0.25 * size)))
    return found


def nodes(root):
    """{node title: (fill, (x0, y0, x1, y1))} from each node's polygon."""
    found = {}
    for group in root.iter(SVG + "g"):
        if group.get("class") != "node":
            continue
        polygon = group.find(SVG + "polygon")
        points = [tuple(map(float, pair.split(","))) for pair in polygon.get("points").split()]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        labels = " ".join(t.text for t in group.iter(SVG + "text"))
        found[labels] = (polygon.get("fill"), (min(xs), min(ys), max(xs), max(ys)))
    return found


def overlap(a, b):
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def check_readable(root):
    labels, boxes = label_boxes(root), nodes(root)
    assert labels and boxes
    over_boxes = [(text, name) for text, box in labels for name, (_, node) in boxes.items() if overlap(box, node)]
    assert over_boxes == []
    over_labels = [(a[0], b[0]) for i, a in enumerate(labels) for b in labels[i + 1:] if overlap(a[1], b[1])]
    assert over_labels == []


def check_highlights(root, net):
    """The DropIn nodes, and only they, have the DropIn fill (no Resize here); no edge has it."""
    ours = {layer.get("name") for layer in net.get_all("layer") if layer.get("type") == "Python"}
    assert ours
    filled = {name.split(" (")[0] for name, (fill, _) in nodes(root).items() if fill in HIGHLIGHTS}
    assert filled == ours
    assert all(fill == draw.COLOURS["DropIn"] for name, (fill, _) in nodes(root).items() if fill in HIGHLIGHTS)
    edge_colours = {element.get("stroke") or element.get("fill") for group in root.iter(SVG + "g")
                    if group.get("class") == "edge" for element in group}
    assert not edge_colours & HIGHLIGHTS


def test_residual_net_of_150_layers_is_readable(tmp_path):
    text = residual_net()
    assert text.count("layer {") >= 150
    root, net = expanded_svg(tmp_path, text, {"res5a": 1, "res12b": 1, "res20a": 1})
    check_readable(root)
    check_highlights(root, net)
    # every non-in-place layer is one node: data, stem, 3 per block, ip, loss, plus the replicas and DropIns
    assert len(nodes(root)) == 1 + 1 + 3 * 21 + 2 + 3 * 2


def test_branching_net_is_readable(tmp_path):
    root, net = expanded_svg(tmp_path, branching_net(), {"m1_3x3": 1, "m2_1x1": 1})
    check_readable(root)
    check_highlights(root, net)
    labels = [text for text, _ in label_boxes(root)]
    assert "2x12x8x8" in labels  # the Concat of 4 + 4 + 4 channels


def test_skip_edges_are_dashed_and_neutral():
    net_text = draw.dot_source(*expanded(residual_net(2), {"res1a": 1}))
    edges = [line for line in net_text.splitlines() if " -> " in line]
    skips = [line for line in edges if "dashed" in line]
    assert skips and all('color="%s"' % draw.SKIP in line for line in skips)
    assert any('color="%s"' % draw.EDGE in line for line in edges)
    assert all(colour not in net_text.split("->", 1)[1] for colour in HIGHLIGHTS)


def test_quotes_in_names_and_title_are_escaped():
    net, shapes, _ = expanded(residual_net(1), {"res1a": 1})
    text = draw.dot_source(net, shapes, title='a "quoted" \\ title')
    assert 'label="a \\"quoted\\" \\\\ title"' in text


def test_render_refuses_other_formats(tmp_path):
    with pytest.raises(Exception, match=r"\.png or \.svg"):
        draw.render("digraph {}", str(tmp_path / "x.jpg"))
    assert os.listdir(str(tmp_path)) == []


def run_cli(tmp_path, drawing):
    net = tmp_path / "residual.prototxt"
    net.write_text(residual_net(3))
    out, err = io.StringIO(), io.StringIO()
    code = expand_main([str(net), "--replicate", "res2a=1", "--dropin-length", "10", "--no-validate", "-q",
                        "--draw", drawing, "-o", str(tmp_path / "out")], out, err)
    return code, out.getvalue(), err.getvalue()


def test_cli_draws_a_png_with_dot(tmp_path):
    drawing = str(tmp_path / "net.png")
    code, out, err = run_cli(tmp_path, drawing)
    assert code == 0, err
    assert out.splitlines()[-1] == "wrote drawing %s" % drawing
    assert "graphviz" not in err.lower()
    assert open(drawing, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_without_graphviz_the_cli_falls_back_to_matplotlib_with_a_note(tmp_path, monkeypatch):
    monkeypatch.setattr(draw, "dot_path", lambda: None)
    drawing = str(tmp_path / "net.png")
    code, out, err = run_cli(tmp_path, drawing)
    assert code == 0, err
    assert re.search(r"note: Graphviz's dot is not installed.*apt-get install graphviz", err)
    assert open(drawing, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
