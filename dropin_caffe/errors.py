"""The one family of errors the library raises; only command-line mains turn them into exit codes."""


class DropInCaffeError(Exception):
    """Base of every error dropin_caffe raises on purpose."""


class ConfigError(DropInCaffeError, ValueError):
    """A layer parameter or blob shape breaks a rule; the message says which and how to fix it."""


class CaffeEnvError(DropInCaffeError):
    """The embedded Caffe cannot be built, found or entered."""
