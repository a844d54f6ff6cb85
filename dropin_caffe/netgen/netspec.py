"""DropIn and Resize for nets built with Caffe's own `caffe.NetSpec`.

    import caffe
    from caffe import layers as L
    from dropin_caffe import netspec

    n = caffe.NetSpec()
    n.data = L.Input(shape=dict(dim=[64, 50, 8, 8]))
    n.conv3 = L.Convolution(n.data, num_output=50, kernel_size=3, pad=1)
    n.conv3_dropin, n.conv3_dropin_p = netspec.dropin(n.data, n.conv3, 1000, name="conv3_dropin", p_top=True)
    n.up = netspec.resize(n.conv3_dropin, height=16, width=16)
    print(n.to_proto())

Each helper returns NetSpec tops and emits exactly the layer expand_net emits (type "Python",
module dropin_caffe.layers, the JSON param_str, the counter's `param { lr_mult: 0 decay_mult: 0 }`,
loss_weight 0 on the p top). NetSpec names a layer only when it writes the net, so `name`, when
given, goes into param_str as expand_net writes it (messages then name the layer). Options are
checked with the layer's own rules here, so a bad value raises ConfigError before Caffe starts.
"""
import json

from .. import params
from ..errors import ConfigError
from .vocabulary import DROPIN_MODULE


def _config(kind, config):
    """`config` without the unset options, checked by the layer's rules; its param_str."""
    config = {key: value for key, value in config.items() if value is not None}
    params.layer_config(kind, json.dumps(config))
    return json.dumps(config)


def dropin(prev, new, length=None, *, mode="gradual", p_new=None, start=0, iter_size=1, seed=None,
           test="expectation", train="select", p_top=False, name=None):
    """A DropIn layer joining NetSpec tops `prev` and `new` (same shapes): its top, or (top, p)
    with p_top. Keywords are the param_str keys (see dropin_caffe.layers.DropIn); param_str holds
    what expand_net writes: name, mode unless gradual, length or p_new, start unless 0, iter_size,
    seed, and test and train when not their defaults."""
    from caffe import layers
    config = {"name": name, "mode": None if mode == "gradual" else mode, "length": length, "p_new": p_new,
              "start": start or None, "iter_size": iter_size, "seed": seed,
              "test": None if test == "expectation" else test, "train": None if train == "select" else train}
    extra = {"loss_weight": [0, 0]} if p_top else {}
    return layers.Python(prev, new, ntop=2 if p_top else 1, param=[{"lr_mult": 0, "decay_mult": 0}],
                         python_param={"module": DROPIN_MODULE, "layer": "DropIn",
                                       "param_str": _config("DropIn", config)}, **extra)


def resize(bottom, *, like=None, channels=None, height=None, width=None, interp="bilinear", name=None):
    """A Resize layer: `bottom` resized to `like`'s C, H, W (a second bottom, as Crop does) or to
    the given channels/height/width (each optional = keep)."""
    from caffe import layers
    config = {"name": name, "channels": channels, "height": height, "width": width,
              "interp": None if interp == "bilinear" else interp}
    if like is not None and (channels, height, width) != (None, None, None):
        raise ConfigError("Resize: the target comes from `like`, so give no channels, height or width with it")
    bottoms = (bottom,) if like is None else (bottom, like)
    return layers.Python(*bottoms, python_param={"module": DROPIN_MODULE, "layer": "Resize",
                                                 "param_str": _config("Resize", config)})
