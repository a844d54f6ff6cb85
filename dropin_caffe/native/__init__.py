"""The native DropIn and DropInResize layers: C++ sources beside this file, built on first use
against the Caffe in use and loaded into it, never rebuilding Caffe or changing caffe.proto.

    from dropin_caffe import native
    native.load()    # before building a caffe.Net with type "DropIn" or "DropInResize"

The layers read the Python layers' `python_param { param_str }` JSON and keep the same
two-float counter, so a prototxt switches between them by its `type` line alone and a
.caffemodel loads into either. For the `caffe` command line the library is LD_PRELOADed
(`tools/caffe-env run caffe ...` does it once `python3 -m dropin_caffe.native build` has run).

The library is cached in <env.home()>/native under a hash of the sources, the compiler flags and
the libcaffe file, so a changed source or Caffe builds anew; it is linked into a temporary file
and renamed into place, under a lock, so concurrent builds neither collide nor see half a file.

Caveats: pycaffe aborts the process (glog) on an unknown layer type, so load() must come first.
The library is built with CPU_ONLY; a CUDA build of libcaffe lays its classes out differently,
so it is refused rather than loaded.
"""
import concurrent.futures
import contextlib
import ctypes
import ctypes.util
import glob
import hashlib
import importlib.util
import os
import shutil
import subprocess
import tempfile

from .. import env
from ..errors import DropInCaffeError

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ("params.cpp", "dropin_layer.cpp", "resize_layer.cpp", "register.cpp")
FLAGS = ("-O3", "-std=c++14", "-fPIC", "-fvisibility=hidden", "-fvisibility-inlines-hidden",
         "-DCPU_ONLY", "-include", os.path.join(HERE, "compat.h"))
LIBRARIES = ("-lglog", "-lprotobuf", "-ldl")
# Headers the sources need, and the Debian/Ubuntu package that has them.
HEADERS = (("caffe/layer.hpp", "libcaffe-dev (Ubuntu: libcaffe-cpu-dev)"),
           ("nlohmann/json.hpp", "nlohmann-json3-dev"), ("glog/logging.h", "libgoogle-glog-dev"),
           ("google/protobuf/message.h", "libprotobuf-dev"), ("boost/shared_ptr.hpp", "libboost-dev"),
           ("cblas.h", "libopenblas-dev"))
LIBRARY_NAME = "libdropin_caffe_native"
TYPES = ("DropIn", "DropInResize")


class NativeBuildError(DropInCaffeError):
    """The native layers cannot be built or loaded here; the message says why and what to do."""


def cache_dir():
    return os.path.join(env.home(), "native")


def preload_path():
    """The library the `caffe` command line preloads: the latest build (see env.command_line)."""
    return os.path.join(cache_dir(), LIBRARY_NAME + ".so")


def libcaffe():
    """The libcaffe pycaffe links against (or $DROPIN_CAFFE_LIBCAFFE), resolved to its file."""
    given = os.environ.get("DROPIN_CAFFE_LIBCAFFE")
    if given:
        if not os.path.isfile(given):
            raise NativeBuildError("DROPIN_CAFFE_LIBCAFFE is %s, which is not a file" % given)
        return os.path.realpath(given)
    found = _linked_libcaffe() or ctypes.util.find_library("caffe")
    if found and not os.path.isabs(found):
        found = _ldconfig_path(found)
    if not found:
        raise NativeBuildError("libcaffe not found: install Caffe (Debian/Ubuntu: apt-get install caffe-cpu, "
                               "or use tools/caffe-env run), or set DROPIN_CAFFE_LIBCAFFE to its path")
    return os.path.realpath(found)


def _linked_libcaffe():
    """libcaffe's path as pycaffe's extension module resolves it (ldd), or None."""
    spec = importlib.util.find_spec("caffe")
    if spec is None or not spec.submodule_search_locations or shutil.which("ldd") is None:
        return None
    for module in glob.glob(os.path.join(spec.submodule_search_locations[0], "_caffe*.so")):
        listed = subprocess.run(["ldd", module], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                universal_newlines=True).stdout
        for line in listed.splitlines():
            name, _, where = line.strip().partition(" => ")
            if name.startswith("libcaffe.so") and where.startswith("/"):
                return where.split()[0]
    return None


def _ldconfig_path(soname):
    listed = subprocess.run(["ldconfig", "-p"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            universal_newlines=True).stdout
    for line in listed.splitlines():
        if line.strip().startswith(soname + " ") and " => " in line:
            return line.split(" => ")[1].strip()
    return None


def _check_cpu_only(library, contents):
    # A CUDA build needs the CUDA runtime (and cuBLAS); a CPU_ONLY build names neither.
    if b"libcudart.so" in contents or b"libcublas.so" in contents:
        raise NativeBuildError("%s is a CUDA build of Caffe; the native layers are built CPU_ONLY and must not "
                               "be loaded into it: use the Python layers (type \"Python\")" % library)


def _source_files():
    return sorted(glob.glob(os.path.join(HERE, "*.cpp")) + glob.glob(os.path.join(HERE, "*.h*")))


def _key(library, contents):
    digest = hashlib.sha256(" ".join(FLAGS[:-1] + LIBRARIES).encode())
    for source in _source_files():
        with open(source, "rb") as handle:
            digest.update(os.path.basename(source).encode() + b"\0" + handle.read())
    digest.update(library.encode() + b"\0" + contents)
    return digest.hexdigest()[:16]


def _target():
    """(libcaffe path, library path for these sources and that libcaffe)."""
    library = libcaffe()
    with open(library, "rb") as handle:
        contents = handle.read()
    _check_cpu_only(library, contents)
    return library, os.path.join(cache_dir(), "%s-%s.so" % (LIBRARY_NAME, _key(library, contents)))


def path():
    """Where the library for the current sources and libcaffe is (or will be) built."""
    return _target()[1]


def _include_dirs(library):
    """Directories to pass as -I: $DROPIN_CAFFE_INCLUDE, and libcaffe's prefix unless it is /usr."""
    prefix = os.path.dirname(os.path.dirname(library))
    if os.path.basename(prefix) == "lib":  # .../lib/x86_64-linux-gnu/libcaffe.so
        prefix = os.path.dirname(prefix)
    given = [d for d in os.environ.get("DROPIN_CAFFE_INCLUDE", "").split(os.pathsep) if d]
    return [d for d in given + [os.path.join(prefix, "include")] if os.path.isdir(d) and d != "/usr/include"]


def _check_tools(includes):
    compiler = os.environ.get("CXX", "g++")
    if shutil.which(compiler) is None:
        raise NativeBuildError("no C++ compiler (%s) to build the native layers; install g++" % compiler)
    searched = includes + ["/usr/local/include", "/usr/include"] + glob.glob("/usr/include/*-linux-gnu")
    for header, package in HEADERS:
        if not any(os.path.isfile(os.path.join(d, header)) for d in searched):
            raise NativeBuildError("missing header %s (looked in %s); install %s, or set DROPIN_CAFFE_INCLUDE"
                                   % (header, ", ".join(searched), package))
    return compiler


def _run(command):
    done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, universal_newlines=True)
    if done.returncode != 0:
        errors = [line for line in done.stdout.splitlines() if "error" in line] or done.stdout.splitlines()
        raise NativeBuildError("building the native layers failed: %s" % " | ".join(errors[:3])[:1000])


def build(force=False):
    """Build the library unless a current one is cached; return its path."""
    library, target = _target()
    with env.locked(cache_dir()):  # a second build waits for the first, then reuses it
        if not os.path.exists(target) or force:
            _compile(library, target)
        if os.path.realpath(preload_path()) != target:
            link = os.path.join(cache_dir(), "preload.tmp")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            os.symlink(target, link)
            os.replace(link, preload_path())  # atomic, like the library itself
    return target


def _compile(library, target):
    """Compile the sources in parallel and link them against `library` into `target`."""
    includes = _include_dirs(library)
    compiler = _check_tools(includes)
    flags = [compiler, *FLAGS, *("-I" + d for d in includes)]
    with tempfile.TemporaryDirectory(prefix="build.", dir=cache_dir()) as work:
        objects = [os.path.join(work, source[:-4] + ".o") for source in SOURCES]
        commands = [flags + ["-c", os.path.join(HERE, source), "-o", obj] for source, obj in zip(SOURCES, objects)]
        with concurrent.futures.ThreadPoolExecutor(max(1, min(len(SOURCES), os.cpu_count() or 1))) as pool:
            list(pool.map(_run, commands))
        linked = os.path.join(work, "linked.so")
        _run([compiler, "-shared", "-o", linked, *objects, library, *LIBRARIES])
        os.replace(linked, target)  # same file system: atomic


def load():
    """Build if needed and load the library into this process, registering the layer types
    with its Caffe. Loading again is harmless. Returns the library's path."""
    library = build()
    ctypes.CDLL(library, mode=ctypes.RTLD_GLOBAL)
    return library


def info():
    """What `python3 -m dropin_caffe.native info` prints: {name: value}."""
    library, target = _target()
    return {"types": " ".join(TYPES), "libcaffe": library, "library": target,
            "built": "yes" if os.path.exists(target) else "no", "preload": preload_path()}
