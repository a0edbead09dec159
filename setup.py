"""Build script for the optional C kernel; all other metadata lives in pyproject.toml.

``noah._poca`` (src/noah/csrc/poca.c) speeds up the head's CPU inference path. It is optional:
without a C compiler the install still succeeds and noah uses its pure-PyTorch path.
"""

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    def build_extensions(self) -> None:
        unix = self.compiler.compiler_type != "msvc"
        for ext in self.extensions:
            ext.extra_compile_args = ["-O3", "-std=c11", "-fno-math-errno"] if unix else ["/O2"]
        super().build_extensions()


setup(
    ext_modules=[Extension("noah._poca", sources=["src/noah/csrc/poca.c"], optional=True)],
    cmdclass={"build_ext": BuildExt},
)
