"""The one family of errors the library raises; only command-line mains turn them into exit codes."""


class DropInCaffeError(Exception):
    """Base of every error dropin_caffe raises on purpose."""


class ConfigError(DropInCaffeError, ValueError):
    """A layer parameter or blob shape breaks a rule; the message says which and how to fix it."""


class CaffeEnvError(DropInCaffeError):
    """The embedded Caffe cannot be built, found or entered."""


def clip(text, limit=60):
    """Text as a message echoes it: whole up to `limit` characters, else its start and "..." (a
    200,000-character token must not make a 200 KB message)."""
    return text if len(text) <= limit else text[:limit - 3] + "..."
