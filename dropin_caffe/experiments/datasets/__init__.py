"""Real datasets (MNIST, Fashion-MNIST, CIFAR-10) into the LMDBs Caffe's stock nets read:
`sources` reads and checks the files, `lmdb` writes the databases, `prepare` puts them in place."""
from .prepare import prepare
from .sources import dataset, names, output_paths

__all__ = ["prepare", "dataset", "names", "output_paths"]
