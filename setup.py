"""Package build hook: compiles the BPF classifier so an installed labelwall finds its object.

Runs at ``pip install .`` (build_py copies it into the wheel through package-data) and at
``pip install -e .`` (the object lands in the source tree the editable install points at).
The clang command line lives in bpf_src/build.py, shared with ``make bpf``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class BuildWithBpf(build_py):
    def run(self) -> None:
        spec = importlib.util.spec_from_file_location("lw_bpf_build", HERE / "bpf_src" / "build.py")
        if spec is None or spec.loader is None:
            raise RuntimeError("bpf_src/build.py is missing from the source tree")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.build()
        super().run()


setup(cmdclass={"build_py": BuildWithBpf})
