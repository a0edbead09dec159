"""Build script for the optional C kernel; all other metadata lives in pyproject.toml.

``noah._poca`` (src/noah/csrc/: poca.c for inference, train.c for training, common.h shared)
speeds up the head's float32 CPU paths. It is optional:
without a C compiler the install still succeeds and noah uses its pure-PyTorch path.
"""

from setuptools import Extension, setup
from setuptools.errors import CCompilerError, CompileError, LinkError
from setuptools.command.build_ext import build_ext


class BuildExt(build_ext):
    """Build with OpenMP where the compiler has it, else without (the kernel then runs on one
    thread); an extension that cannot be built at all is skipped (``optional=True``)."""

    def build_extension(self, ext: Extension) -> None:
        unix = self.compiler.compiler_type != "msvc"
        base = ["-O3", "-std=c11", "-fno-math-errno"] if unix else ["/O2"]
        openmp = ["-fopenmp"] if unix else ["/openmp"]
        ext.extra_compile_args, ext.extra_link_args = base + openmp, openmp if unix else []
        try:
            super().build_extension(ext)
        except (CCompilerError, CompileError, LinkError):
            print(f"building {ext.name} with OpenMP failed; building it single-threaded")
            ext.extra_compile_args, ext.extra_link_args = base, []
            super().build_extension(ext)


setup(
    ext_modules=[
        Extension(
            "noah._poca",
            sources=["src/noah/csrc/poca.c", "src/noah/csrc/train.c"],
            depends=["src/noah/csrc/common.h", "src/noah/csrc/train.h"],
            optional=True,
        )
    ],
    cmdclass={"build_ext": BuildExt},
)
