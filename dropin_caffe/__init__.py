"""dropin_caffe: Gradual DropIn of layers (Smith, Hand & Doster 2015) for Caffe.

Public names are loaded on first use, so `import dropin_caffe` needs neither numpy nor Caffe
(the environment tools run on machines that have neither).
"""
import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "DropIn": "layers", "Resize": "layers",
    "schedule_p_new": "kernels", "sample_mask": "kernels",
    "dropin_forward": "kernels", "dropin_backward": "kernels",
    "blend_forward": "kernels", "blend_backward": "kernels",
    "resize_forward": "kernels", "resize_backward": "kernels", "interp_matrix": "kernels",
    "DropInCaffeError": "errors", "ConfigError": "errors", "CaffeEnvError": "errors",
    "Message": "prototxt", "Enum": "prototxt", "parse": "prototxt", "dumps": "prototxt",
    "read": "prototxt", "write": "prototxt", "upgrade_net": "prototxt",
    "infer": "shapes", "check_net": "validate",
    "Plan": "expand", "preset_plan": "expand", "summary": "expand",
    "render_net": "templates", "render_solver": "templates",
    "parse_log": "logs", "read_log": "logs", "prepare": "datasets",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError("module 'dropin_caffe' has no attribute %r" % name)
    return getattr(importlib.import_module("." + _EXPORTS[name], __name__), name)
