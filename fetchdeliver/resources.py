"""Find the files shipped beside the code: Lark grammars and examples."""

from __future__ import annotations

import os


def _find(package: str, folder: str) -> str:
    # Installed wheel (and editable install): the folder is a sub-package.
    # Plain source tree on sys.path: the top-level folder next to the package.
    try:
        from importlib.resources import files

        path = str(files(package))
        if os.path.isdir(path):
            return path
    except (ImportError, TypeError):
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    return os.path.join(os.path.dirname(here), folder)


def grammar_path(name: str) -> str:
    """Path of a grammar file, e.g. grammar_path('sieve.lark')."""
    return os.path.join(_find("fetchdeliver.grammar", "grammar"), name)


def examples_dir() -> str:
    return _find("fetchdeliver.examples", "examples")
