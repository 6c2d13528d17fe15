"""The package's layout: modules depend on each other one way only."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "hmgen"


def imports() -> dict[str, set[str]]:
    """hmgen module -> the hmgen modules it imports, anywhere in its body (function-local imports too)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str | None:          # hmgen.cell.reference.CharLM -> hmgen.cell.reference
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:                    # relative: from .x import y
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                found.update(f"{base}.{a.name}" for a in node.names)
        graph[name] = {owner(t) for t in found if t.startswith("hmgen")} - {None, name}
    return graph


def reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def edges_on_cycles(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Every import a -> b such that b also leads back to a."""
    return sorted((a, b) for a in graph for b in graph[a] if a in reaches(graph, b))


def test_the_cycle_finder_sees_a_cycle_through_several_modules():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert edges_on_cycles(graph) == [("a", "b"), ("b", "c"), ("c", "a")]


def test_no_hmgen_module_imports_itself_through_others():
    graph = imports()
    assert "hmgen.text.datasets" in graph["hmgen.text.data"]      # the scan sees function-local imports
    assert edges_on_cycles(graph) == []


def test_the_integer_engines_and_the_mixer_components_sit_where_readme_layout_says():
    """Each of README's Layout entries for archive/engine/ and archive/adaptive/ names exactly the modules there,
    and the engine classes it names are defined in the modules it names them with; cell/ holds no engine."""
    import re
    layout = (PACKAGE.parent / "README.md").read_text().split("## Layout", 1)[1].split("```")[1].splitlines()

    def entry(folder: str) -> str:               # its first line, and the indented lines that continue it
        start = next(i for i, line in enumerate(layout) if line.startswith(f"  {folder}/ "))
        rest = layout[start + 1:]
        end = next((i for i, line in enumerate(rest) if not line.startswith(" " * 21)), len(rest))
        return "\n".join([layout[start]] + rest[:end])

    for folder in ("engine", "adaptive"):
        named = set(re.findall(r"\b(\w+)\.py\b", entry(folder)))
        assert named == {p.stem for p in (PACKAGE / "archive" / folder).glob("*.py")} - {"__init__"}, folder
    engines = re.findall(r"(\w+)\.py \((QuantLM|IntegerLM)", entry("engine"))
    assert {cls for _, cls in engines} == {"QuantLM", "IntegerLM"}
    assert all(f"class {cls}" in (PACKAGE / "archive/engine" / f"{m}.py").read_text() for m, cls in engines)
    assert not any("njit" in p.read_text() or "QuantLM" in p.read_text() for p in (PACKAGE / "cell").glob("*.py"))


# The package's tiers, top to bottom (README "Layout"). A module imports its own package, the tiers below, and, in
# the top and bottom tiers only, its neighbours: text/, handwriting/ and archive/ never import each other, and
# nothing imports upward (function-local imports included).
TIERS = [("hmgen", "hmgen.__main__", "hmgen.cli", "hmgen.modelio"),
         ("hmgen.text", "hmgen.handwriting", "hmgen.archive"),
         ("hmgen.training",),
         ("hmgen.cell",),
         ("hmgen.modelfile", "hmgen.fs", "hmgen.errors", "hmgen.progress", "hmgen.device", "hmgen.bundled", "hmgen.jit")]


def unit(module: str) -> str:
    """The tier entry a module belongs to: hmgen.text.train -> hmgen.text; the package itself -> hmgen."""
    parts = module.split(".")
    return ".".join(parts[:2]) if len(parts) > 1 else "hmgen"


def tier(module: str) -> int:
    return next(i for i, units in enumerate(TIERS) if unit(module) in units)


def layering_breaches(graph: dict[str, set[str]]) -> list[str]:
    out = []
    for a, targets in graph.items():
        for b in targets:
            if unit(a) == unit(b):
                continue
            ta, tb = tier(a), tier(b)
            if tb < ta or (tb == ta and ta not in (0, len(TIERS) - 1)):
                out.append(f"{a} -> {b}")
    return sorted(out)


def test_every_module_sits_in_a_tier():
    assert all(any(unit(m) in units for units in TIERS) for m in imports()), "a module outside README's tiers"


def test_the_layering_check_sees_an_upward_and_a_sideways_import():
    graph = {"hmgen.cell.reference": {"hmgen.training.loop"}, "hmgen.text.train": {"hmgen.handwriting.model"},
             "hmgen.cli.train": {"hmgen.text.train"}}
    assert layering_breaches(graph) == ["hmgen.cell.reference -> hmgen.training.loop",
                                        "hmgen.text.train -> hmgen.handwriting.model"]


def test_dependencies_point_one_way_tier_by_tier():
    assert layering_breaches(imports()) == []
