"""Old module paths (pvlens 0.1 flat layout) resolve to their new homes for one release.

`import pvlens.steering` returns the very module object `pvlens.core.steering`, so attribute
access and monkeypatching through either name act on the same thing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType

MOVED: dict[str, str] = {
    "pvlens.model": "pvlens.core.model",
    "pvlens.device": "pvlens.core.device",
    "pvlens.chat": "pvlens.core.chat",
    "pvlens.hooks": "pvlens.core.hooks",
    "pvlens.steering": "pvlens.core.steering",
    "pvlens.engine": "pvlens.core.engine",
    "pvlens.generation": "pvlens.core.generation",
    "pvlens.activations": "pvlens.core.activations",
    "pvlens.tl_speedups": "pvlens.core.tl_speedups",
    "pvlens.extract": "pvlens.vectors.extract",
    "pvlens.rollouts": "pvlens.vectors.rollouts",
    "pvlens.sweep": "pvlens.vectors.sweep",
    "pvlens.compare": "pvlens.vectors.compare",
    "pvlens.datasets": "pvlens.trainsets.datasets",
    "pvlens.screen": "pvlens.trainsets.screen",
    "pvlens.experiments": "pvlens.finetune.experiments",
    "pvlens.jsonl": "pvlens.io.jsonl",
    "pvlens.viz": "pvlens.io.viz",
    "pvlens.report": "pvlens.io.report",
}
"""Old dotted module path → new one."""


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        warnings.warn(
            f"{spec.name} moved to {self.target}; the old path goes away in pvlens 0.3",
            DeprecationWarning,
            stacklevel=2,
        )
        module = importlib.import_module(self.target)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the target module is already executed."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: object = None, target: object = None):  # noqa: ANN201
        new = MOVED.get(fullname)
        if new is None:
            return None
        return importlib.util.spec_from_loader(fullname, _AliasLoader(new))


def install() -> None:
    """Register the finder once (idempotent)."""
    if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _MovedModuleFinder())
