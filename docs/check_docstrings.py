"""Fail when a public object of `sar` is undocumented: run by `nox -s docs` after the site is built.

Public means exported: the names in `sar.__all__` and `sar.models.__all__`, and the public methods that
their classes define. Each public function or method needs a docstring that names every one of its
arguments (the project writes prose docstrings, so an argument counts as documented when its name appears
in the docstring as a word, e.g. in backquotes; `*args` and `**kwargs` are exempt) and a return annotation
(the signature the API page shows says what it returns). A class's constructor arguments may be named in
the class docstring or in `__init__`'s. Exported constants need a docstring (a string right below the
assignment). The package is read from its source with griffe, mkdocstrings' reader: nothing is imported,
so no torch is needed.
"""

import re
import sys
from collections.abc import Iterator
from pathlib import Path

import griffe

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sar", "sar.models")  # the modules whose __all__ is the public API
# nn.Module's hooks that SAR's modules override: their contract is torch's and documented there
TORCH_HOOKS = {"extra_repr"}
# `*args` and `**kwargs` pass on what another callable documents (timm's create_model, a parent's __init__)
CATCH_ALLS = {griffe.ParameterKind.var_positional, griffe.ParameterKind.var_keyword}


def _words(text: str) -> set[str]:
    return set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", text))


def _exported(package: griffe.Module) -> Iterator[griffe.Object]:
    for name in package.exports or ():
        obj = package[name]
        obj = obj.final_target if obj.is_alias else obj
        if obj.is_module and name in obj.members and not obj.members[name].is_module:
            obj = obj.members[name]  # `from sar.attach import attach`: the function, not its module
            obj = obj.final_target if obj.is_alias else obj
        yield obj


def _function_problems(function: griffe.Function, extra_doc: str = "") -> list[str]:
    doc = function.docstring.value if function.docstring else ""
    problems = [] if doc or function.name == "__init__" else ["no docstring"]
    named = _words(doc + "\n" + extra_doc)
    skip = {"self", "cls"}
    missing = [
        p.name
        for p in function.parameters
        if p.name not in skip and p.name not in named and p.kind not in CATCH_ALLS
    ]
    if missing and (doc or extra_doc):
        problems.append(f"arguments not named in the docstring: {', '.join(missing)}")
    if function.name != "__init__" and function.returns is None:
        problems.append("no return annotation")
    return problems


def problems(root: Path = ROOT) -> dict[str, list[str]]:
    """Each undocumented public object's path -> what its documentation lacks."""
    found: dict[str, list[str]] = {}
    loaded = griffe.load("sar", search_paths=[str(root)], resolve_aliases=True)
    seen: set[str] = set()
    for package in PACKAGES:
        module = loaded if package == "sar" else loaded[package.removeprefix("sar.")]
        for obj in _exported(module):
            if obj.path in seen or obj.is_module:
                continue  # a module's own exports are checked through PACKAGES
            seen.add(obj.path)
            if obj.is_function:
                found[obj.path] = _function_problems(obj)
            elif obj.is_class:
                doc = obj.docstring.value if obj.docstring else ""
                found[obj.path] = [] if doc else ["no docstring"]
                for name, member in obj.members.items():
                    if member.is_alias or not member.is_function or name in TORCH_HOOKS:
                        continue
                    if name == "__init__":
                        found[obj.path] += _function_problems(member, extra_doc=doc)
                    elif not name.startswith("_"):
                        found[member.path] = _function_problems(member)
            elif obj.is_attribute:
                found[obj.path] = [] if obj.docstring else ["no docstring"]
    return {path: lacks for path, lacks in found.items() if lacks}


def main() -> int:
    """Print each undocumented public object with what it lacks; exit 1 if there is any."""
    lacking = problems()
    for path, lacks in sorted(lacking.items()):
        print(f"{path}: {'; '.join(lacks)}")
    if lacking:
        print(f"{len(lacking)} public object(s) of sar undocumented (see docs/check_docstrings.py)")
        return 1
    print("every public object of sar is documented")
    return 0


if __name__ == "__main__":
    sys.exit(main())
