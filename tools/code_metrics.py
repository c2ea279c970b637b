"""Code-health numbers for issue reports: long functions, private cross-module imports, annotations.

Run: `python tools/code_metrics.py [pvlens]`. Prints one line per metric and the offenders.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            yield node


def measure(root: Path) -> dict[str, object]:
    """Collect the metrics for every .py file below `root` (a package folder)."""
    long_functions: list[tuple[int, str]] = []
    private_imports: list[str] = []
    params = unannotated = 0
    unannotated_sites: list[str] = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        module = _module_name(path, root)
        for fn in _functions(tree):
            length = (fn.end_lineno or fn.lineno) - fn.lineno + 1
            long_functions.append((length, f"{path}:{fn.lineno} {fn.name}"))
            args = [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]
            args += [a for a in (fn.args.vararg, fn.args.kwarg) if a is not None]
            for arg in args:
                if arg.arg in ("self", "cls"):
                    continue
                params += 1
                if arg.annotation is None:
                    unannotated += 1
                    unannotated_sites.append(f"{path}:{fn.lineno} {fn.name}({arg.arg})")
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if not node.module.startswith(root.name):
                    continue
                if node.module == module:
                    continue
                for alias in node.names:
                    if alias.name.startswith("_") and not alias.name.startswith("__"):
                        private_imports.append(f"{path}:{node.lineno} {node.module}.{alias.name}")
                if any(p.startswith("_") and p != "__init__" for p in node.module.split(".")[1:]):
                    pass
    long_functions.sort(reverse=True)
    return {
        "functions_over_60_lines": [f"{n} {site}" for n, site in long_functions if n > 60],
        "longest_functions": [f"{n} {site}" for n, site in long_functions[:5]],
        "private_cross_module_imports": private_imports,
        "parameters": params,
        "unannotated_parameters": unannotated,
        "unannotated_sites": unannotated_sites,
    }


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else "pvlens")
    m = measure(root)
    verbose = "-v" in sys.argv
    print(f"functions over 60 lines: {len(m['functions_over_60_lines'])}")
    for line in m["functions_over_60_lines"]:
        print("   ", line)
    print("longest:", *m["longest_functions"], sep="\n    ")
    print(f"private names imported across modules: {len(m['private_cross_module_imports'])}")
    for line in m["private_cross_module_imports"]:
        print("   ", line)
    print(f"unannotated parameters: {m['unannotated_parameters']} of {m['parameters']}")
    if verbose:
        for line in m["unannotated_sites"]:
            print("   ", line)


if __name__ == "__main__":
    main()
