"""Writing outputs so that nothing is half-written and nothing is overwritten unasked.

`check_output` refuses a path before any work is done (a directory, an existing file without
`force`, a missing folder). `write_atomic` writes one file through a temporary file beside it,
fsynced and then renamed over the target, so a reader sees the old file or the new one, never
a part. `write_all` writes several files as a set: every one is staged (and checked) first and
only then renamed into place, so an error while staging leaves none of them changed.

A file's content is bytes, text (UTF-8, surrogate escapes kept as bytes), or a function that
writes a given path (matplotlib's savefig, which infers the format from the extension: the
temporary file keeps the target's extension).
"""
import os
import tempfile
import zlib

from .errors import ConfigError

# What reading a plain or gzip-compressed input can raise: a damaged .gz raises zlib.error (no
# OSError) mid-stream, a truncated one EOFError.
READ_ERRORS = (OSError, EOFError, zlib.error)


def read_error_reason(error):
    """Words for why reading (and gunzipping) an input failed, for a one-line message."""
    if isinstance(error, zlib.error):
        return "the gzip data is damaged (%s); re-create or re-download the file" % error
    if isinstance(error, EOFError):
        return "the gzip data is truncated (%s); re-create or re-download the file" % error
    return getattr(error, "strerror", None) or str(error)


def check_output(path, force=False, what=None, parent_may_be_missing=False):
    """Raise ConfigError unless `path` can be written: not a directory, absent unless `force`,
    its folder present (unless `parent_may_be_missing`: the caller creates it). `what` names the
    option in messages ("-o", "--csv")."""
    label = "%s %s" % (what, path) if what else str(path)
    if os.path.isdir(path):
        raise ConfigError("%s is a directory; give a file name" % label)
    if os.path.lexists(path) and not force:
        raise ConfigError("%s exists; pass --force to overwrite it" % label)
    parent = os.path.dirname(os.path.abspath(path))
    if not parent_may_be_missing and not os.path.isdir(parent):
        raise ConfigError("%s: the directory %s does not exist" % (label, parent))


def _stage(path, content):
    """Write `content` to a new temporary file beside `path`; return the temporary's name."""
    directory, name = os.path.split(os.path.abspath(path))
    handle, temp = tempfile.mkstemp(dir=directory, prefix="." + name + ".", suffix=".partial" +
                                    os.path.splitext(name)[1])
    try:
        if callable(content):
            os.close(handle)
            content(temp)
            handle = os.open(temp, os.O_RDONLY)
        else:
            data = content.encode("utf-8", "surrogateescape") if isinstance(content, str) else content
            view = memoryview(data)
            while view:  # os.write may write less than it is given
                view = view[os.write(handle, view):]
        os.fsync(handle)
        os.close(handle)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        return temp
    except BaseException:
        _remove(temp)
        raise


def _remove(path):
    try:
        os.unlink(path)
    except OSError:
        pass


def write_all(outputs, force=False):
    """Write `outputs`, a list of (path, content), as a set: all of them or none.

    Refuses (ConfigError, nothing written) a path that is a directory, exists without `force`, is
    given twice, or whose folder is missing; an OSError while writing becomes a ConfigError
    naming the file, and no target is changed.
    """
    seen = set()
    for path, _ in outputs:
        real = os.path.realpath(path)
        if real in seen:
            raise ConfigError("two outputs would both be %s; give them different names" % path)
        seen.add(real)
        check_output(path, force)
    staged = []
    try:
        for path, content in outputs:
            try:
                staged.append((_stage(path, content), path))
            except OSError as error:
                raise ConfigError("cannot write %s: %s" % (path, error.strerror or error)) from None
        for index, (temp, path) in enumerate(staged):
            try:
                os.replace(temp, path)
            except OSError as error:
                raise ConfigError("cannot write %s: %s" % (path, error.strerror or error)) from None
            staged[index] = (None, path)
    finally:
        for temp, _ in staged:
            if temp is not None:
                _remove(temp)


def write_atomic(path, content, force=False):
    """Write one file atomically (see the module docstring); the same refusals as `write_all`."""
    write_all([(os.fspath(path), content)], force)


def write_into(out_dir, outputs, force=False):
    """`write_all` into `out_dir`, made if missing (and removed again if the writing fails)."""
    existing = os.path.abspath(out_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ConfigError("-o %s: %s is a file; give a directory for the outputs" % (out_dir, existing))
    for path, _ in outputs:
        check_output(path, force, parent_may_be_missing=True)
    created = not os.path.isdir(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    try:
        write_all(outputs, force)
    except BaseException:
        if created and not os.listdir(out_dir):
            os.rmdir(out_dir)
        raise
