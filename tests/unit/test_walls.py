"""CJ and LPS talk only through messages: neither side's code imports the other's.

The one module allowed to know both is the message contract
(``infrastructure.messaging.contracts``), where CJ's and LPS's types are translated; the
composition roots (CLI commands, process wiring) may import both sides to connect them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("domain", "application", "infrastructure", "projections")

LPS = ("domain.lps", "application.lps", "infrastructure.lps")
#: imported by both sides: pure helpers and plumbing that holds no rule of either
NEUTRAL = (
    "domain.backoff",
    "infrastructure.settings",
    "infrastructure.logging",
    "infrastructure.metrics",
    "infrastructure.messaging.broker",
    "infrastructure.messaging.bundles",
    "infrastructure.messaging.dead_letters",
    "infrastructure.messaging.topology",
    "infrastructure.messaging.validation",
    "infrastructure.messaging.service",
    "infrastructure.messaging.transport",
)
CONTRACT = "infrastructure.messaging.contracts"
COMPOSITION_ROOTS = (
    "infrastructure.bootstrap",
    "infrastructure.cli",
    "infrastructure.messaging.processes",
)


def _within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def side_of(module: str) -> str:
    """``lps``, ``cj``, or ``free`` (neutral, the contract, or a composition root)."""
    if _within(module, LPS):
        return "lps"
    if _within(module, (*NEUTRAL, CONTRACT, *COMPOSITION_ROOTS)):
        return "free"
    return "cj"


def imported_modules(source: str) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {m for m in modules if m.split(".")[0] in PACKAGES}


def _known(module: str, all_modules: set[str]) -> str:
    """The longest prefix of ``module`` that is a module or package of ours."""
    parts = module.split(".")
    while parts and ".".join(parts) not in all_modules:
        parts.pop()
    return ".".join(parts) if parts else module


def crossings(module: str, source: str, all_modules: set[str]) -> list[str]:
    """The imports of ``module`` that reach over the wall."""
    side = side_of(module)
    if side == "free":
        return []
    found: set[str] = set()
    for target in {_known(m, all_modules) for m in imported_modules(source)}:
        other = side_of(target)
        if (
            other == "free"
            and target == CONTRACT
            and side == "lps"
            and module.startswith(("domain.", "application."))
        ):
            found.add(target)  # the pure LPS core does not even see the contract
        elif other not in ("free", side):
            found.add(target)
    return sorted(found)


def our_modules() -> dict[str, str]:
    modules = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            name = name.removesuffix(".__init__")
            modules[name] = path.read_text(encoding="utf-8")
    return modules


def test_no_cj_module_imports_lps_and_no_lps_module_imports_cj():
    modules = our_modules()
    names = set(modules)
    violations = {
        name: found for name, source in modules.items() if (found := crossings(name, source, names))
    }
    assert violations == {}


def test_the_contract_is_where_both_sides_meet():
    imports = imported_modules(our_modules()[CONTRACT])
    assert any(_within(m, LPS) for m in imports)
    assert any(side_of(m) == "cj" for m in imports)


@pytest.mark.parametrize(
    ("module", "source", "crosses"),
    [
        ("domain.lps.outcomes", "from domain.values import SuccessDetails", ["domain.values"]),
        ("application.lps.runtime", "import application.ports", ["application.ports"]),
        ("application.lps.intake", f"from {CONTRACT} import X", [CONTRACT]),
        ("infrastructure.lps.worker", f"from {CONTRACT} import X", []),
        ("infrastructure.lps.worker", "from projections.runner import R", ["projections.runner"]),
        ("domain.workflow", "from domain.lps import QueuedRequest", ["domain.lps"]),
        ("infrastructure.messaging.outcomes", "from application.lps import X", ["application.lps"]),
        ("infrastructure.messaging.outcomes", "from domain.backoff import Backoff", []),
        ("infrastructure.cli.demo_cmd", "from infrastructure.lps.embedded import E", []),
        ("domain.lps.requests", "from domain.lps.bundling import X", []),
    ],
)
def test_the_wall_check_catches_each_kind_of_crossing(module, source, crosses):
    names = set(our_modules()) | {"domain.lps.outcomes", "application.lps.intake"}
    assert crossings(module, source, names) == crosses
