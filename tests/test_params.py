"""param_str parsing for our layers: every failure is one ConfigError naming the layer."""
import pytest

from dropin_caffe import params
from dropin_caffe.errors import ConfigError


def deep(depth, name=None):
    head = '{"name": "%s", "mode": ' % name if name else '{"mode": '
    return head + "[" * depth + "]" * depth + "}"


@pytest.mark.parametrize("kind", ["DropIn", "Resize"])
@pytest.mark.parametrize("depth", [2000, 100000])
def test_deeply_nested_param_str_is_a_config_error_naming_the_layer(kind, depth):
    with pytest.raises(ConfigError) as info:
        params.layer_config(kind, deep(depth, name="conv2_dropin"))
    message = str(info.value)
    assert message.startswith("%s 'conv2_dropin': " % kind) and "\n" not in message and len(message) < 300


def test_deeply_nested_param_str_without_a_name_names_the_kind():
    with pytest.raises(ConfigError, match=r"^DropIn: param_str nests too deeply"):
        params.layer_config("DropIn", "[" * 100000 + "]" * 100000)


def test_invalid_json_names_the_layer_and_cuts_the_echo():
    param_str = '{"name": "d1", "length": 5, ' + "x" * 100000
    with pytest.raises(ConfigError) as info:
        params.layer_config("DropIn", param_str)
    message = str(info.value)
    assert message.startswith("DropIn 'd1': param_str must be a JSON object") and len(message) < 300


def test_bad_values_are_echoed_cut():
    with pytest.raises(ConfigError) as info:
        params.layer_config("DropIn", '{"name": "d", "length": "%s"}' % ("9" * 100000))
    message = str(info.value)
    assert message.startswith('DropIn \'d\': "length" must be an integer >= 1, got "999') and len(message) < 300
    with pytest.raises(ConfigError, match='"mode" must be one of "gradual", "regularize", got'):
        params.layer_config("DropIn", '{"name": "d", "mode": %s}' % ("[" * 900 + "]" * 900))


def test_param_str_must_be_a_string():
    with pytest.raises(ConfigError, match="^Resize: param_str must be a string holding a JSON object, got NoneType"):
        params.layer_config("Resize", None)


def test_good_param_str_still_parses():
    config, label = params.layer_config("DropIn", '{"name": "d", "length": 10}')
    assert config["length"] == 10 and config["mode"] == "gradual" and label == "DropIn 'd'"


@pytest.mark.parametrize("value, rule", [
    ("1e30", '"height" must be an integer >= 1, got 1e+30'),
    (str(2 ** 31), '"height" must be at most 2147483647 (INT_MAX'),
    ("1" + "0" * 40, '"height" must be at most 2147483647 (INT_MAX'),
])
def test_resize_dimension_beyond_caffes_int_is_refused(value, rule):
    """Caffe's blob dimensions are C ints: a larger one would abort Caffe (Blob::Reshape's CHECK)."""
    with pytest.raises(ConfigError) as info:
        params.layer_config("Resize", '{"name": "r", "height": %s}' % value)
    message = str(info.value)
    assert message.startswith("Resize 'r': " + rule) and "\n" not in message and len(message) < 300


def test_resize_dimension_at_int_max_is_accepted():
    config, _ = params.layer_config("Resize", '{"name": "r", "width": %d}' % params.INT_MAX)
    assert config["width"] == 2 ** 31 - 1
