"""A package's names that are imported on first use (PEP 562), so that importing the package stays light."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module


def lazy_attributes(package: str, modules: dict[str, str]) -> Callable[[str], object]:
    """The ``__getattr__`` of ``package``: ``name`` in ``modules`` comes from ``package.<modules[name]>``,
    imported when first asked for; any other name is an AttributeError as usual."""

    def __getattr__(name: str):
        if name in modules:
            return getattr(import_module(f"{package}.{modules[name]}"), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
