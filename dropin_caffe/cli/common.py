"""What every command line shares: argparse with one-line errors, value parsers, and the shell
that turns the project's errors into one line on stderr and an exit code.

Every command is `main(argv=None, out=None, err=None) -> int`: 0 done, 1 done with failures the
output names, 2 bad input (one line, nothing written), 130 stopped by Ctrl-C.
"""
import argparse
import os
import sys

from ..errors import ConfigError, DropInCaffeError


def invoked_as(name):
    """The command `name` (e.g. "expand_net.py") as the user typed it: "expand_net" from the console
    script, `name` from tools/expand_net.py and when other code calls its main."""
    typed = os.path.basename(sys.argv[0])
    stem = lambda text: os.path.splitext(text)[0].replace("-", "_")  # noqa: E731
    return typed if stem(typed) == stem(name) else name


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (a ConfigError that `shell` turns into exit code 2), and
    whose usage names the command as the user typed it."""

    def __init__(self, *args, prog=None, **kwargs):
        super().__init__(*args, prog=invoked_as(prog) if prog else None, **kwargs)

    def error(self, message):
        raise ConfigError("%s (see --help)" % message)


def assignment(convert, what):
    """An argparse type for NAME=VALUE, VALUE converted by `convert`; `what` describes the form."""
    def parse(text):
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise argparse.ArgumentTypeError("expected %s, got %r" % (what, text))
        try:
            return name, convert(value)
        except ValueError:
            raise argparse.ArgumentTypeError("expected %s, got %r" % (what, text)) from None
    return parse


def shape(text):
    """C,H,W or N,C,H,W as a tuple of ints."""
    return tuple(int(d) for d in text.split(","))


def shell(prog, body, argv, out, err, interrupted=None):
    """Run `body(argv, out, err) -> exit code` with the project's error handling. `interrupted`
    is the line Ctrl-C prints (exit code 130); without it Ctrl-C prints that the command stopped."""
    out, err, prog = out or sys.stdout, err or sys.stderr, invoked_as(prog)
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        return body(argv, out, err)
    except DropInCaffeError as error:
        print("%s: %s" % (prog, error), file=err)
        return 2
    except KeyboardInterrupt:
        print("\n%s: %s" % (prog, interrupted or "stopped; nothing half-written was kept"), file=err)
        return 130
    except SystemExit as done:  # --help, --version
        return done.code or 0
