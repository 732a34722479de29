"""How a stage folder shows what other stages may use: its `__init__` names each public name and the file that
defines it, and a name is imported from its file only when first asked for (PEP 562). Importing one name costs
one file, as importing the file did: a run's process, which re-imports the command line, holds no pandas or
matplotlib it does not use, and a test's patch of a file's name is what the other stages see."""
from __future__ import annotations

import importlib
from typing import Any, Callable


def lazy(package: str, public: dict[str, tuple[str, ...]], modules: tuple[str, ...] = ()
         ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """(__getattr__, __dir__, __all__) for the stage `package`: `public` maps each file to the names it offers,
    `modules` names files offered whole (a namespace such as `storage`)."""
    where = {name: module for module, names in public.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in where:
            return getattr(importlib.import_module(f"{package}.{where[name]}"), name)
        if name in modules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted([*where, *modules])

    return __getattr__, __dir__, sorted([*where, *modules])
