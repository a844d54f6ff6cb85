"""Install dropin_caffe (Python >= 3.9: the embedded Caffe's Python is 3.9).

pycaffe is not on PyPI: use the machine's own Caffe or tools/caffe-env (see README.md).
The stock net templates install under <prefix>/share/dropin-caffe/.
"""
import glob

from setuptools import find_packages, setup

setup(
    name="dropin-caffe",
    version="0.2.0",
    description="Gradual DropIn of layers (Smith, Hand & Doster 2015) for Caffe",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["dropin_caffe", "dropin_caffe.*"]),
    package_data={"dropin_caffe.native": ["*.cpp", "*.hpp", "*.h"]},  # compiled on first use
    python_requires=">=3.9",
    install_requires=["numpy", "protobuf", "jinja2", "matplotlib"],
    # run_experiments --cluster: the same Dask on client, scheduler and workers (the embedded Caffe's)
    extras_require={"cluster": ["dask==2024.8.0", "distributed==2024.8.0"],
                    # `pip install -e ".[test]"`: the pure-Python tests on a host (those needing Caffe are skipped)
                    "test": ["pytest", "hypothesis"]},
    data_files=[("share/dropin-caffe/prototxt_templates", glob.glob("prototxt_templates/*.j2")),
                ("share/dropin-caffe/solvers", glob.glob("solvers/*.j2"))],
    entry_points={"console_scripts": ["%s = dropin_caffe.cli.%s:main" % (command, module) for command, module in (
        ("expand_net", "expand_net"), ("run_experiments", "run_experiments"), ("make_dataset", "make_dataset"),
        ("plot_log", "plot_log"), ("plot_schedule", "plot_schedule"), ("caffe-env", "caffe_env"),
        ("export_net", "export_net"))]},
    license="BSD-2-Clause",
)
