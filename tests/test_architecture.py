"""The package's layers: imports point one way (cli -> experiments -> netgen -> core), only cli/
parses arguments and prints, and what tools/caffe-env needs imports with the standard library."""
import ast
import os
import subprocess
import sys

from conftest import REPO

PACKAGE = os.path.join(REPO, "dropin_caffe")
LAYERS = {"cli": 3, "experiments": 2, "netgen": 1}  # everything else in the package is the core, 0


def modules():
    """{module name: path} of every module of the package."""
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path, REPO)[:-3].split(os.sep)
                found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer(module):
    parts = module.split(".")
    return LAYERS.get(parts[1], 0) if len(parts) > 1 else 0


def imports(module, path):
    """The dropin_caffe modules `module` imports (absolute names), wherever in the file."""
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found.update("%s.%s" % (base, alias.name) for alias in node.names)
    known = modules()
    return {name for name in found if name in known}


def test_imports_point_from_cli_to_experiments_to_netgen_to_core():
    wrong = ["%s imports %s" % (module, target) for module, path in sorted(modules().items())
             for target in sorted(imports(module, path)) if layer(target) > layer(module)
             and not module.endswith("__main__")]  # `python3 -m dropin_caffe.X` may delegate to cli/
    assert wrong == []


def test_the_walk_sees_the_layers():
    # Guards the test above: it must see real imports of each kind.
    edges = {(layer(m), layer(t)) for m, p in modules().items() for t in imports(m, p)}
    assert {(3, 2), (3, 1), (2, 1), (1, 0), (3, 0)} <= edges


def test_only_cli_parses_arguments_and_prints():
    offenders = []
    for module, path in sorted(modules().items()):
        if layer(module) == 3 or module.endswith("__main__"):
            continue
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names):
                offenders.append("%s imports argparse" % module)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print":
                offenders.append("%s prints (line %d)" % (module, node.lineno))
            if isinstance(node, ast.Attribute) and node.attr == "exit" and getattr(node.value, "id", "") == "sys":
                offenders.append("%s calls sys.exit (line %d)" % (module, node.lineno))
    assert offenders == []


def test_caffe_env_and_the_package_import_with_the_standard_library_alone():
    """`python3 -S` has no site-packages: numpy, Caffe, jinja2 cannot be imported there."""
    code = ("import sys, dropin_caffe, dropin_caffe.env, dropin_caffe.cli.caffe_env; "
            "assert 'numpy' not in sys.modules; print(dropin_caffe.__all__)")
    done = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, universal_newlines=True, env=dict(os.environ, PYTHONPATH=REPO))
    assert done.returncode == 0, done.stderr
    assert "expand_net" in done.stdout
    done = subprocess.run([sys.executable, "-S", os.path.join(REPO, "tools", "caffe-env"), "--help"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, universal_newlines=True)
    assert done.returncode == 0 and "caffe-env" in done.stdout, done.stderr
    probe = subprocess.run([sys.executable, "-S", "-c", "import numpy"], stderr=subprocess.PIPE)
    assert probe.returncode != 0  # the check above is meaningful: -S really hides numpy here
