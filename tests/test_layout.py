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


def layout_entries(block: str | None = None) -> dict[str, str]:
    """README's Layout block (or `block`), entry by entry: {"hmgen/text/": its text, "hmgen/archive/engine/": ...,
    "hmgen/fs.py": ...}. An entry is a line that names a folder or a file at its start (a subfolder indented by two
    spaces, under the folder named above it), with the lines indented by 21 spaces that continue it."""
    if block is None:
        block = (PACKAGE.parent / "README.md").read_text().split("## Layout", 1)[1].split("```")[1]
    entries, folder, head = {}, "", ""
    for line in block.splitlines():
        if not line.strip():
            continue
        if line.startswith(" " * 21):
            entries[head] += "\n" + line
            continue
        name = line.split()[0]
        head = folder + name if line.startswith("  ") else name
        if not line.startswith("  ") and name.endswith("/"):
            folder = name
        entries[head] = line
    return entries


def only_a_docstring(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def unnamed(entries: dict[str, str], files: list[str]) -> list[str]:
    """The files (paths like "hmgen/text/train.py") that the Layout does not name: a file in a folder must be named
    in its folder's entry, a file at the top anywhere by its path."""
    import re
    everything = "\n".join(entries.values())
    out = []
    for f in files:
        folder, _, name = f.rpartition("/")
        if folder == "hmgen":
            named = re.search(rf"(?<![\w/.]){re.escape(f)}\b", everything)
        else:
            named = re.search(rf"(?<![\w.]){re.escape(name)}\b", entries.get(folder + "/", ""))
        if not named:
            out.append(f)
    return out


def test_the_layout_check_sees_a_module_named_in_the_wrong_folder():
    entries = layout_entries("hmgen/a/    x.py, y.py\n  b/        z.py\nhmgen/c.py   what\n")
    assert set(entries) == {"hmgen/a/", "hmgen/a/b/", "hmgen/c.py"}
    files = ["hmgen/a/x.py", "hmgen/a/b/y.py", "hmgen/a/b/z.py", "hmgen/c.py", "hmgen/d.py"]
    assert unnamed(entries, files) == ["hmgen/a/b/y.py", "hmgen/d.py"]


def test_readme_layout_names_every_module():
    """A newcomer can tell from README's Layout which folder a change belongs in: every .py file under hmgen/ is
    named there, in its folder's entry (a package's __init__.py that holds only its docstring goes without)."""
    files = [p.relative_to(PACKAGE.parent).as_posix() for p in sorted(PACKAGE.rglob("*.py"))
             if not (p.name == "__init__.py" and only_a_docstring(p))]
    assert unnamed(layout_entries(), files) == []


def test_the_integer_engines_and_the_mixer_components_sit_where_readme_layout_says():
    """Each of README's Layout entries for archive/engine/ and archive/adaptive/ names exactly the modules there,
    and the engine classes it names are defined in the modules it names them with; cell/ holds no engine."""
    import re
    entries = layout_entries()
    for folder in ("engine", "adaptive"):
        named = set(re.findall(r"\b(\w+)\.py\b", entries[f"hmgen/archive/{folder}/"]))
        assert named == {p.stem for p in (PACKAGE / "archive" / folder).glob("*.py")} - {"__init__"}, folder
    engines = re.findall(r"(\w+)\.py \((QuantLM|IntegerLM)", entries["hmgen/archive/engine/"])
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
