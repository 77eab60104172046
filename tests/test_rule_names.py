"""Every rule runs the script of its own name, and the script calls the workflow step of that
name (cilaudio.workflow_steps), so rule, script and function are found from one another."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _rules_and_scripts():
    pairs = []
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        rule = None
        for line in smk.read_text().splitlines():
            m = re.match(r"\s*rule\s*(\w*):", line)
            if m:
                rule = m.group(1) or "make_lists"  # the list rules are made per dataset: make_lists_<dataset>
            m = re.search(r'"\.\./scripts/(\w+)\.py"', line)
            if m:
                pairs.append((smk.name, rule, m.group(1)))
    return pairs


def test_rule_script_and_step_share_one_name():
    pairs = _rules_and_scripts()
    assert len(pairs) >= 15
    for smk, rule, script in pairs:
        assert script == rule, f"{smk}: rule {rule} runs scripts/{script}.py"
        text = (REPO / "workflow/scripts" / f"{script}.py").read_text()
        assert re.search(rf"from cilaudio\.workflow_steps import [^\n]*\b{script}\b", text), script
        assert re.search(rf"^\s*{script}\(", text, flags=re.M), f"scripts/{script}.py does not call {script}()"
    scripts = {p.stem for p in (REPO / "workflow/scripts").glob("*.py")}
    assert scripts == {s for _, _, s in pairs}, "a script no rule runs"


def test_readme_layout_names_every_library_module():
    text = (REPO / "README.md").read_text().split("Library modules (", 1)[1]
    named = {part for name in re.findall(r"`([a-z0-9_.]+)`", text.split("\n## ", 1)[0])
             for part in name.split(".")}
    package = REPO / "src/cilaudio"
    modules = {p.stem for p in package.glob("*.py")}
    modules |= {p.stem for sub in ("methods", "reporting") for p in (package / sub).glob("*.py")}
    modules -= {"__init__"}
    assert modules - named == set(), f"README's layout does not name {sorted(modules - named)}"
