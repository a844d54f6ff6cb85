"""Property-based fuzzing of the prototxt reader: mutated caffe-doc prototxts and random nets.

For any text, `prototxt.parse` returns a Message or raises PrototxtError (a ConfigError), in
well under a second; what it returns writes back (`dumps`) to text that parses to the same
tree. Random trees round-trip through dumps and parse exactly.
"""
import glob
import os
import time

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dropin_caffe.errors import ConfigError  # noqa: E402
from dropin_caffe.netgen.prototxt import Enum, Message, dumps, parse  # noqa: E402

DOC = "/usr/share/doc/caffe-doc/examples"
STOCK = sorted(glob.glob(os.path.join(DOC, "**", "*.prototxt"), recursive=True))
SLOW = 1.0  # seconds one parse may take, on inputs of at most a few KB
# ~10 s for all three at the default; DROPIN_FUZZ_EXAMPLES=5000 for a longer campaign.
FUZZ = settings(max_examples=int(os.environ.get("DROPIN_FUZZ_EXAMPLES", 400)), deadline=2000,
                suppress_health_check=[HealthCheck.too_slow])


def _texts():
    texts = []
    for path in STOCK:
        with open(path, encoding="utf-8") as stream:
            texts.append(stream.read())
    return texts


TEXTS = _texts()
# Characters that matter to the grammar, and some that should not appear in it at all.
PIECES = list('{}<>[]:;,"\'\\#-.+eExX0179_\n \t') + ["\x00", "\u00e9", "\udc80", "\\x", "\\777", "0x", "1e",
                                                       "nan", "-inf", "true", "layer {", "}}", "{{", '"\\"']


def parse_checked(text):
    """parse(text), which must end in a Message or a ConfigError within SLOW seconds."""
    start = time.perf_counter()
    try:
        tree = parse(text)
    except ConfigError as error:
        assert "\n" not in str(error) and len(str(error)) < 1000
        tree = None
    seconds = time.perf_counter() - start
    event("parsed" if tree is not None else "ConfigError")
    event("parse over 0.1 s" if seconds > 0.1 else "parse under 0.1 s")
    assert seconds < SLOW, "slow input: %r" % text[:200]
    return tree


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(TEXTS))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        kind = draw(st.sampled_from(["insert", "delete", "duplicate", "truncate"]))
        if kind == "insert":
            text = text[:at] + draw(st.sampled_from(PIECES)) * draw(st.integers(1, 3)) + text[at:]
        elif kind == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        elif kind == "duplicate":
            text = text[:at] + text[at:at + draw(st.integers(1, 200))] * 2 + text[at + 1:]
        else:
            text = text[:at]
    return text


@pytest.mark.caffe
@pytest.mark.skipif(not STOCK, reason="caffe-doc's examples are not installed")
@FUZZ
@given(mutated())
def test_mutated_caffe_doc_prototxts_parse_or_fail_cleanly_and_round_trip(text):
    tree = parse_checked(text)
    if tree is not None:
        again = dumps(tree)
        assert parse(again) == tree and dumps(parse(again)) == again


_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True)
# An Enum that reads back as an Enum: not a bool spelling (t, true, ...).
_ENUMS = _NAMES.filter(lambda name: name not in ("t", "f", "true", "false", "True", "False")).map(Enum)
_SCALARS = st.one_of(
    st.integers(-2 ** 70, 2 ** 70), st.floats(allow_nan=False, allow_infinity=False), st.booleans(), _ENUMS,
    st.text(st.characters(blacklist_categories=("Cs",)) | st.sampled_from(["\udc80", "\udcff"]), max_size=12))
_MESSAGES = st.recursive(
    st.lists(st.tuples(_NAMES, _SCALARS), max_size=4).map(Message),
    lambda inner: st.lists(st.tuples(_NAMES, st.one_of(_SCALARS, inner)), max_size=4).map(Message),
    max_leaves=20)


@FUZZ
@given(_MESSAGES)
def test_random_nets_round_trip_through_dumps_and_parse(tree):
    text = dumps(tree)
    assert parse_checked(text) == tree and dumps(parse(text)) == text


@FUZZ
@given(st.lists(st.sampled_from(PIECES), max_size=60).map("".join))  # st.text refuses multi-character pieces
def test_random_token_soup_parses_or_fails_cleanly(text):
    tree = parse_checked(text)
    if tree is not None:
        assert parse(dumps(tree)) == tree
