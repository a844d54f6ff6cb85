"""The embedded Caffe's bookkeeping, without rebuilding the root: stamps, reuse, the lock, binds."""
import os
import shutil
import subprocess
import sys
import tempfile

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
