"""The layer diagram of DESIGN §2, enforced: no module imports a layer above its own.

application ──► consensus ──► incentive ──► contract ──► data;  application ──► network ──► data.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fedcoin"

# What each layer may import from fedcoin (besides itself and fedcoin.errors).
ALLOWED = {
    "data": set(),
    "contract": {"data"},
    "incentive": {"contract", "data"},
    "consensus": {"incentive", "contract", "data"},
    "network": {"data"},
    "application": {"consensus", "incentive", "contract", "data", "network"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.startswith("fedcoin")}


def layer_edges() -> list[tuple[str, str, str]]:
    edges = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        source_layer = rel.parts[0] if len(rel.parts) > 1 else None
        for name in imports_of(path):
            parts = name.split(".")
            target = parts[1] if len(parts) > 1 else ""
            edges.append((str(rel), source_layer or "", target))
    return edges


def test_no_upward_or_sideways_imports() -> None:
    bad = []
    for rel, source, target in layer_edges():
        if target in ("", "errors") or target == source:
            continue
        if source == "":
            # top-level modules of the package (errors, __init__) import nothing of ours
            bad.append(f"{rel} imports fedcoin.{target}")
        elif target not in ALLOWED[source]:
            bad.append(f"{rel} ({source}) imports fedcoin.{target}")
    assert not bad, "layer violations:\n" + "\n".join(bad)


def test_the_walker_sees_the_imports() -> None:
    edges = layer_edges()
    assert ("consensus/rules.py", "consensus", "incentive") in edges
    assert any(source == "contract" and target == "data" for _, source, target in edges)


def test_nothing_imports_application_but_main() -> None:
    for rel, source, target in layer_edges():
        if target == "application":
            assert source == "application", f"{rel} imports fedcoin.application"
