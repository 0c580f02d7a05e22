"""Build script: compiles fastagent/_speedups.pyx (its Cython directives are in its header).

``FASTAGENT_NO_EXTENSIONS=1`` at build time skips the extension and yields a pure
``py3-none-any`` wheel. Otherwise a failed compile fails the build: there is no
silent fallback at install time. (Read here from the environment, not through
``fastagent.speedups``: the package is not importable while it is being built.)
"""

import os

from setuptools import Extension, setup

NO_EXTENSIONS = os.environ.get("FASTAGENT_NO_EXTENSIONS", "") not in ("", "0")


def extensions() -> list[Extension]:
    if NO_EXTENSIONS:
        return []
    from Cython.Build import cythonize

    return cythonize(
        [Extension("fastagent._speedups", ["fastagent/_speedups.pyx"], extra_compile_args=["-O3"])]
    )


setup(ext_modules=extensions())
