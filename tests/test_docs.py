"""The docs pages: every relative link and image resolves, every #anchor names a heading, the
generated expand_net examples are current, and the README stays a front page."""
import glob
import importlib.util
import os
import re

import pytest

from conftest import REPO

EXAMPLES = os.path.join(REPO, "docs", "expand_net_examples.md")
REGENERATE = "tools/caffe-env run python3 tools/make_docs_examples.py"


def pages():
    """README.md and every .md file under docs/, as paths."""
    return [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "**", "*.md"),
                                                               recursive=True))


def prose(text):
    """`text` without fenced code blocks and inline code spans, where brackets are not links."""
    text = re.sub(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", "", text, flags=re.M | re.S)
    return re.sub(r"(`+).+?\1", "", text, flags=re.S)


def targets(text):
    """Every link and image target: [text](target), ![alt](target), <img src>, <a href>."""
    text = prose(text)
    found = re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", text)
    return found + re.findall(r"<(?:img|a)\b[^>]*?\b(?:src|href)=\"([^\"]+)\"", text)


def anchor(heading):
    """GitHub's anchor for a heading: its text lowercased, punctuation dropped, spaces to '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(text):
    """The anchors of a markdown text's headings; a repeated one gets -1, -2, ... as on GitHub."""
    text = re.sub(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", "", text, flags=re.M | re.S)
    found = set()
    for heading in re.findall(r"^ {0,3}#{1,6}[ \t]+(.*?)[ \t#]*$", text, flags=re.M):
        name, n = anchor(heading), 0
        while (name if n == 0 else "%s-%d" % (name, n)) in found:
            n += 1
        found.add(name if n == 0 else "%s-%d" % (name, n))
    return found


def test_anchor_follows_githubs_rule():
    assert anchor("The headline: lenet-deep") == "the-headline-lenet-deep"
    assert anchor("Expanding a net: `tools/expand_net.py`") == "expanding-a-net-toolsexpand_netpy"
    assert anchor("CIFAR-10 net from 3 to 11 layers, on Fashion-MNIST") == \
        "cifar-10-net-from-3-to-11-layers-on-fashion-mnist"
    assert anchors("# A\n```\n# not a heading\n```\n## A\n") == {"a", "a-1"}


def test_every_relative_link_and_anchor_resolves():
    broken, checked = [], 0
    for page in pages():
        with open(page) as f:
            text = f.read()
        for target in targets(text):
            if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:: not ours to check
                continue
            checked += 1
            path, _, fragment = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
            where = "%s: %s" % (os.path.relpath(page, REPO), target)
            if not os.path.exists(resolved):
                broken.append("%s (no file %s)" % (where, os.path.relpath(resolved, REPO)))
            elif fragment and resolved.endswith(".md"):
                with open(resolved) as f:
                    if fragment not in anchors(f.read()):
                        broken.append("%s (no heading with anchor #%s)" % (where, fragment))
    assert checked >= 50  # the scan sees the links at all
    assert broken == [], "broken links:\n" + "\n".join(broken)


def test_every_docs_page_is_reachable_from_the_readme():
    with open(os.path.join(REPO, "README.md")) as f:
        linked = {os.path.normpath(os.path.join(REPO, t.partition("#")[0])) for t in targets(f.read())}
    pages_here = glob.glob(os.path.join(REPO, "docs", "*.md"))
    assert pages_here
    assert sorted(os.path.relpath(p, REPO) for p in pages_here if p not in linked) == []


def test_the_readme_is_a_front_page():
    with open(os.path.join(REPO, "README.md")) as f:
        text = f.read()
    assert len(text.splitlines()) <= 220, "README.md has %d lines; move detail to docs/" % len(text.splitlines())
    # The set-up commands, verbatim: the second is what CI runs (.ci/run).
    assert "tools/caffe-env run python3 tools/run_experiments.py lenet-deep --seeds 1" in text
    assert "tools/caffe-env run python3 -m pytest -q tests" in text


@pytest.mark.caffe  # the examples show what expand_net prints where Caffe validates the nets
def test_the_expand_net_examples_are_current(tmp_path):
    spec = importlib.util.spec_from_file_location("make_docs_examples",
                                                  os.path.join(REPO, "tools", "make_docs_examples.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    fresh = tmp_path / "expand_net_examples.md"
    assert script.main(["-o", str(fresh)]) == 0
    with open(EXAMPLES) as f:
        committed = f.read()
    assert committed == fresh.read_text(), (
        "docs/expand_net_examples.md is not what expand_net prints now; regenerate it with: %s" % REGENERATE)
