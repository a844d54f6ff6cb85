"""Draw a net as boxes and arrows with matplotlib, blob shapes on the edges, DropIn highlighted.

Caffe's own draw.py needs pydot and shows no shapes. Here in-place layers (ReLU, in-place LRN,
BatchNorm, ...) are folded into the box of the layer they act on, so a deep chain stays readable;
boxes are placed by rank (longest path from the data layers), left to right within a rank.
"""
from matplotlib.patches import FancyArrowPatch
from matplotlib.path import Path

from . import rewrite
from .vocabulary import LEARNED_TYPES, is_data, our_layer

COLOURS = {"DropIn": "#f4a340", "Resize": "#c39bd3", "data": "#d5d8dc", "weights": "#aed6f1", "other": "#ffffff"}
SKIP = "#b9770e"


def kind(layer):
    """'DropIn', 'Resize', 'data', 'weights' or 'other': what colour a layer is drawn in."""
    ours = our_layer(layer)
    if ours:
        return ours
    if is_data(layer):
        return "data"
    return "weights" if layer.get("type") in LEARNED_TYPES else "other"


def graph(net):
    """(boxes, edges): boxes are [label, kind] per non-in-place layer; edges (from, to, blob)."""
    boxes, edges, producer = [], [], {}
    for layer in rewrite.layers(net):
        bottoms, tops = layer.get_all("bottom"), layer.get_all("top")
        if tops and bottoms == tops and tops[0] in producer:  # in place: fold into the producer's box
            boxes[producer[tops[0]]][0] += "\n+ %s (%s)" % (layer.get("name"), layer.get("type"))
            continue
        index = len(boxes)
        boxes.append(["%s (%s)" % (layer.get("name"), our_layer(layer) or layer.get("type")), kind(layer)])
        edges += [(producer[b], index, b) for b in bottoms if b in producer]
        for top in tops:
            producer[top] = index
    return boxes, edges


def layout(boxes, edges):
    """(x, rank) per box: rank = longest path from a source; x spreads each rank's boxes."""
    rank = [0] * len(boxes)
    for source, target, _ in sorted(edges, key=lambda e: e[1]):
        rank[target] = max(rank[target], rank[source] + 1)
    per_rank = {}
    for index, r in enumerate(rank):
        per_rank.setdefault(r, []).append(index)
    x = [0.0] * len(boxes)
    for members in per_rank.values():
        for position, index in enumerate(members):
            x[index] = position - (len(members) - 1) / 2
    return x, rank


def draw_net(ax, net, shapes=None, title=None):
    """Draw `net` (one phase) on `ax`; `shapes` maps blob names to shapes for the edge labels."""
    boxes, edges = graph(net)
    x, rank = layout(boxes, edges)
    shapes = shapes or {}
    for source, target, blob in edges:
        start, end = (x[source] * 3, -rank[source]), (x[target] * 3, -rank[target])
        shape = shapes.get(blob)
        label = "x".join(map(str, shape)) if shape else "?"
        if rank[target] - rank[source] > 1:  # a skip (DropIn's prev): bend it right, around the boxes
            bend = 1.2 + 0.15 * (rank[target] - rank[source])
            corner = ((start[0] + end[0]) / 2 + bend, (start[1] + end[1]) / 2)
            points = [(start[0] + 0.9, start[1]), corner, (end[0] + 0.9, end[1] + 0.05)]
            ax.add_patch(FancyArrowPatch(path=Path(points, [Path.MOVETO, Path.CURVE3, Path.CURVE3]),
                                         arrowstyle="->", mutation_scale=9, color=SKIP, linewidth=1))
            ax.text(corner[0] / 2 + (start[0] + end[0]) / 4 + 0.46, corner[1], label, fontsize=6.5, color=SKIP,
                    va="center")
        else:
            ax.annotate("", xy=end, xytext=start,
                        arrowprops=dict(arrowstyle="->", color="#555555", shrinkA=12, shrinkB=12))
            ax.text((start[0] + end[0]) / 2 + 0.08, (start[1] + end[1]) / 2, label, fontsize=6.5,
                    color="#333333", va="center")
    for (label, box_kind), bx, r in zip(boxes, x, rank):
        ax.text(bx * 3, -r, label, ha="center", va="center", fontsize=7.5,
                bbox=dict(boxstyle="round,pad=0.35", facecolor=COLOURS[box_kind], edgecolor="#444444"))
    ax.set_xlim(min(x) * 3 - 2.2, max(x) * 3 + 3.2)
    ax.set_ylim(-max(rank) - 0.7, 0.7)
    ax.axis("off")
    if title:
        ax.set_title(title)
    return ax


def figure_size(net):
    """A (width, height) in inches that fits the drawing of `net`."""
    boxes, edges = graph(net)
    x, rank = layout(boxes, edges)
    return max(6.0, 2.2 * (max(x) - min(x) + 2)), max(3.0, 0.62 * (max(rank) + 1))
