"""Shared set-up of the atheris harnesses (run them through ``scripts/fuzz.sh``).

The parsers under test are pure and need the standard library only, but importing
``gateway.containerfs`` runs its ``__init__``, which pulls in the engine clients. The fuzzing
venv holds atheris alone, so :func:`bare_package` registers such a package without running its
``__init__``; its submodules then import as usual (and are instrumented).
"""

from __future__ import annotations

import sys
import types
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def bare_package(name: str) -> None:
    """Make ``name`` importable as a package whose ``__init__`` is not run."""
    if name in sys.modules:
        return
    module = types.ModuleType(name)
    module.__path__ = [str(ROOT.joinpath(*name.split(".")))]
    sys.modules[name] = module


def run(test_one_input: Callable[[bytes], None], seeds: Iterable[bytes]) -> None:
    """Write ``seeds`` into the corpus directory (the first non-option argument) when it is
    empty, then hand over to libFuzzer."""
    import atheris

    dirs = [a for a in sys.argv[1:] if not a.startswith("-")]
    if dirs:
        corpus = Path(dirs[0])
        corpus.mkdir(parents=True, exist_ok=True)
        if not any(corpus.iterdir()):
            for i, seed in enumerate(seeds):
                (corpus / f"seed-{i:03d}").write_bytes(seed)
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
