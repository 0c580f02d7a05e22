"""Build script: compiles fastagent/_speedups.pyx and ships the dataset inside the package.

``FASTAGENT_NO_EXTENSIONS=1`` at build time skips the extension and yields a pure
``py3-none-any`` wheel. Otherwise a failed compile fails the build: there is no
silent fallback at install time.
"""

import os
import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
NO_EXTENSIONS = os.environ.get("FASTAGENT_NO_EXTENSIONS", "") not in ("", "0")
DATA_FILES = ("humaneval_100.json", "humaneval_100_solutions.json", "humaneval_100.sha256")


class build_py_with_dataset(build_py):
    """Copy dataset/*.json into fastagent/_data so an installed wheel needs no source tree."""

    def run(self) -> None:
        super().run()
        target = Path(self.build_lib, "fastagent", "_data")
        target.mkdir(parents=True, exist_ok=True)
        for name in DATA_FILES:
            source = HERE / "dataset" / name
            if not source.is_file():
                raise SystemExit(
                    f"setup.py: {source} is missing; run scripts/build_humaneval_dataset.py"
                )
            shutil.copyfile(source, target / name)


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    return cythonize(
        [Extension("fastagent._speedups", ["fastagent/_speedups.pyx"], extra_compile_args=["-O3"])],
        compiler_directives={
            "language_level": "3",
            "boundscheck": False,
            "wraparound": False,
            "cdivision": True,
            "initializedcheck": False,
        },
    )


setup(ext_modules=extensions(), cmdclass={"build_py": build_py_with_dataset})
