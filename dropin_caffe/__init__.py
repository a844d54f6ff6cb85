"""dropin_caffe: Gradual DropIn of layers (Smith, Hand & Doster 2015) for Caffe.

    from dropin_caffe import expand_net
    expand_net("lenet_train_test.prototxt", replicate={"conv2": 3}, dropin_length=1000).write("out/")

Public names are loaded on first use, so `import dropin_caffe` needs neither numpy nor Caffe
(the environment tools run on a host Python that has neither). The package's layers, from the
bottom up: the core (kernels, params, layers, errors, files, env), netgen/ (the prototxt
toolkit and expand_net), experiments/ (datasets, runs, logs, plots), cli/ (the commands).
"""
import importlib

__version__ = "0.2.0"

_EXPORTS = {
    "expand_net": "netgen.expand", "Expansion": "netgen.expand",
    "DropInCaffeError": "errors", "ConfigError": "errors", "CaffeEnvError": "errors",
    "netspec": "netgen.netspec", "export_net": "netgen.export", "Export": "netgen.export",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError("module 'dropin_caffe' has no attribute %r" % name)
    module = importlib.import_module("." + _EXPORTS[name], __name__)
    return module if module.__name__.endswith("." + name) else getattr(module, name)
