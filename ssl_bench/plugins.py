"""Importing one user plug-in file (an algorithm or a smoothing strategy): the one place that does it.

A plug-in is Python code and runs with the user's permissions; it is imported only when the user names it on the
command line or keeps it in ``./algorithms`` / ``./smoothers`` (never because a record or a config names it).
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import sys
from collections.abc import Callable
from pathlib import Path


def import_plugin_file(path: Path, prefix: str, own_errors: type[BaseException],
                       on_error: Callable[[BaseException], BaseException | None]) -> None:
    """Import ``path`` once, under a module name unique to the file (two plug-ins with the same file name never
    collide, and none can shadow a built-in module).

    ``own_errors`` (the registry's one-line registration errors) pass through unchanged. Any other exception is
    the plug-in's own: ``on_error(exc)`` returns the exception to raise instead (chained to it), or ``None`` to
    re-raise it with its traceback. Either way the half-imported module is forgotten, so a fixed file imports
    again in the same process.
    """
    module_name = f"{prefix}_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:10]}"
    if module_name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise own_errors(f"{path}: not an importable Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except (own_errors, KeyboardInterrupt):   # Ctrl-C while importing stays Ctrl-C
        del sys.modules[module_name]
        raise
    except BaseException as exc:
        del sys.modules[module_name]
        replacement = on_error(exc)
        if replacement is None:
            raise
        raise replacement from exc


def add_note(exc: BaseException, note: str) -> None:
    """``exc.add_note(note)`` where Python has it (3.11+); on 3.10 the traceback alone names the file."""
    if hasattr(exc, "add_note"):
        exc.add_note(note)


def source_file(cls: type) -> str:
    """The file that defines ``cls`` (a plug-in's path, a built-in's module file), or ``"<unknown file>"``."""
    try:
        return inspect.getsourcefile(cls) or "<unknown file>"
    except TypeError:
        return "<unknown file>"


def claim_name(registry: dict[str, type], name: str, cls: type, kind: str,
               error: type[Exception]) -> type:
    """Register ``cls`` as ``registry[name]`` (and ``cls.name``) unless a class of another file holds the name
    (importing the same file again is fine); the one rule both registries (algorithms, strategies) share."""
    where = source_file(cls)
    if name in registry and source_file(registry[name]) != where:
        raise error(f"{where}: {kind} name {name!r} is already registered by {source_file(registry[name])}; "
                    "pick another name")
    cls.name = name
    registry[name] = cls
    return cls


def file_sha256(cls: type) -> str | None:
    """sha256 of the file that defines ``cls`` (what records carry for a plug-in), or None when it has none."""
    path = Path(source_file(cls))
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None
