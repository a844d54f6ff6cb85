"""Say only what the paper says: every sentence of README.md, docs/*.md and the package's .py
files (docstrings, strings, comments) that mentions the paper (Smith, Hand & Doster 2015) must be
one the paper's text supports, a plain citation of its title or authors, or one that marks the
rest as ours ("our choice", "after the paper"). A new attribution ("gaussian std 0.01 as in the
paper") fails until it is rewritten or, if the paper's text does say it, added to SUPPORTED below."""
import ast
import glob
import io
import os
import re
import tokenize

from conftest import REPO

MENTION = re.compile(r"\bpapers?\b|\bSmith\b|\bthe authors\b|\bHand (&|and) Doster\b", re.I)

# Marks what follows as ours, not the paper's.
MARKERS = ("our choice", "after the paper", "after smith")

# Attributions that are never right, whatever else the sentence says.
FORBIDDEN = re.compile(
    r"\b(as|like) (reported |stated |done |used )?in the paper\b|\bas the paper\b|\(the paper'?s?\)"
    r"|\b(follows?|following|per) (the paper|smith)\b|\bthe authors'? (choice|setting)"
    r"|\bthe paper'?s (std|init|initiali[sz]ation|filler|batch|iterations?|depth|choice|setting|hyperparameters?)\b",
    re.I)

# The citation itself: authors, year and title.
CITATION = re.compile(r"smith, hand (&|and) doster,? \(?2015\)?|\"gradual dropin of layers to train very deep neural "
                      r"networks\"", re.I)

# What the paper's text supports (or names that are not about it), as sentences or distinctive
# phrases. A sentence holding one of these passes if it points at the paper only as REFERENCE does
# and nothing else in it is a number; one that only cites the paper passes on the same condition.
SUPPORTED = (
    "how close to the paper",
    "what the paper left open",  # the heading of the questions it names as future work
    "the vgg paper (simonyan & zisserman 2014",
    "the paper gives the nets and the outcomes but few numbers",
    "the paper gives no std",
    "the paper states no",
    # MNIST
    "lenet expanded by added convolution layers whose filters do not change the output size",
    "plain training of the deep net did not converge",
    "with dropin it did with the same hyperparameters",
    "shorter dropin lengths marginally better",
    "deeper nets need more iterations",
    # CIFAR-10
    "the 3-conv caffe net with its convolution layers replicated to 11 layers",
    "the depth of the highway-networks cifar models",
    "every convolutional layer initialised gaussian",
    "final accuracies marginally better for longer lengths",
    # ImageNet
    "alexnet expanded from 8 to 13 layers by duplicating convolution layers",
    "the plain 13-layer net did not converge",
    "shorter lengths (below the first learning-rate drop) better",
    # VGG-16
    "vgg-16 built from the vgg-11 template with dropin instead of weight transfer",
    # regularizing
    "without dropout accuracy degrades late in training, with dropin it does not",
    "above the net without dropout, slightly below dropout",
    # the layers
    "dropin needs the two joined layers to have the same size",
    # future work the paper names
    "comparing dropin with initializing weights from a separately trained shallow network",
    "dropin in recurrent networks",
    "dropin layers entering at different iterations",
    "tailored dropin lengths per layer",
    "starting thin and adding units during training",
    "learning the architecture from the data",
)

# How a supported statement may point at the paper: "in the paper", "the paper reports", ...
REFERENCE = re.compile(r"\b((in|by|according to) the (paper|authors)|(the paper|the authors) "
                       r"(reports?|reported|states?|stated|says|said|shows?|showed|finds|found|notes?|noted|names?|named"
                       r"|describes?|described))\b")

# A number in running text (0.01, 64, 2,000, 3x3), not part of a name (CIFAR-10, vgg16) nor a bare 0 or 1.
NUMBER = re.compile(r"(?<![\w.-])(?![01](?![\w.]))\.?\d")


def normalize(text):
    return re.sub(r"\s+", " ", text).strip()


def sentences(text):
    """The sentences of a text: blocks split at blank lines; table rows, headings and list items
    as units of their own; units split after . ! or ? followed by a capital, a quote or a bracket."""
    units = []
    for block in re.split(r"\n\s*\n", text):
        current = []
        for line in block.splitlines():
            if re.match(r"\s*([|#]|[-*] |\d+\. )", line) and current:
                units.append(" ".join(current))
                current = []
            current.append(line)
        if current:
            units.append(" ".join(current))
    for unit in units:
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z`(\"*])", normalize(unit)):
            if sentence:
                yield sentence


def supported(sentence):
    """True if a sentence mentioning the paper says only what the paper says (see the module doc)."""
    lower = normalize(sentence).lower()
    if FORBIDDEN.search(lower):
        return False
    if any(marker in lower for marker in MARKERS):
        return True
    rest = CITATION.sub(" ", lower)
    if any(phrase in rest for phrase in SUPPORTED):
        for phrase in SUPPORTED:
            rest = rest.replace(phrase, " ")
        rest = REFERENCE.sub(" ", rest)
    return not NUMBER.search(rest) and not MENTION.search(rest)


def texts_of_python(path):
    """Every string constant (docstrings included; implicit concatenations joined) and every block
    of consecutive comment lines of a .py file."""
    with open(path) as f:
        source = f.read()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value
    block = []
    last = None
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            if block and last is not None and token.start[0] != last + 1:
                yield "\n".join(block)
                block = []
            block.append(token.string.lstrip("#").strip())
            last = token.start[0]
    if block:
        yield "\n".join(block)


def mentions():
    """(file, sentence) for every sentence of README.md, docs/*.md and dropin_caffe/**.py that
    mentions the paper."""
    texts = []
    for path in [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md"))):
        with open(path) as f:
            texts.append((os.path.relpath(path, REPO), f.read()))
    for folder, _, names in sorted(os.walk(os.path.join(REPO, "dropin_caffe"))):
        for name in sorted(names):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                texts += [(os.path.relpath(path, REPO), text) for text in texts_of_python(path)]
    for where, text in texts:
        for sentence in sentences(text):
            if MENTION.search(sentence):
                yield where, sentence


def test_every_mention_of_the_paper_says_only_what_it_says():
    found = list(mentions())
    assert len(found) >= 10  # the scan reads the files at all
    unsupported = ["%s: %s" % (where, sentence) for where, sentence in found if not supported(sentence)]
    assert not unsupported, ("sentences crediting the paper with what its text does not say; say 'our "
                             "choice' or 'after the paper's ...', or add a supported statement to "
                             "SUPPORTED:\n" + "\n".join(unsupported))


def test_the_check_rejects_attributions_it_should():
    for bad in ("Their weights gaussian std 0.01 as in the paper.",
                "The added layers start from gaussian std 0.01 (the paper's).",
                "DropIn's win is training the deep net from the paper's init.",
                "The paper trains lenet-deep for 2,000 iterations at batch 64.",
                "AlexNet with a 3x3 replica after each conv layer, like in the paper.",
                "Smith, Hand & Doster (2015) use gaussian std 0.01.",
                "The authors replicate each conv layer of the quick net twice.",
                "Built-in experiments follow Smith, Hand & Doster (2015).",
                "The paper uses 3x3 replicas for AlexNet-13.",
                "The paper replicates every conv layer twice, with dropin in recurrent networks as future work."):
        assert MENTION.search(bad) and not supported(bad), bad


def test_the_check_accepts_what_the_paper_supports():
    for good in ('Gradual DropIn of layers (Smith, Hand & Doster 2015) for Caffe.',
                 "Their weights gaussian std 0.01 (our choice; the paper gives no std for MNIST).",
                 "The presets are built after the paper's expanded nets.",
                 "In the paper plain training of the deep net did not converge in multiple realizations.",
                 "The paper reports AlexNet expanded from 8 to 13 layers by duplicating convolution layers."):
        assert supported(good), good


def test_sentences_split_tables_headings_and_lines():
    text = "# Title\n\nOne line\ncontinued. Two.\n\n| a | b |\n|---|---|\n| c | d |\n- item\n  more\n"
    assert list(sentences(text)) == ["# Title", "One line continued.", "Two.", "| a | b |", "|---|---|",
                                     "| c | d |", "- item more"]
