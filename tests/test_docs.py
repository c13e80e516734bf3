"""The reference pages in docs/ against the code they describe: nothing missing, nothing extra."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path
from xml.etree import ElementTree

import click
import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge

from wallet_proxy import error_handlers, errors
from wallet_proxy.cli import main
from wallet_proxy.config import declared_variables

DOCS = Path(__file__).resolve().parent.parent / "docs"


def table_rows(page: str) -> list[list[str]]:
    """The cells of every table row of a docs page (header and rule lines left out)."""
    rows = []
    for line in (DOCS / page).read_text().splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows.append(cells)
    return rows


def test_the_configuration_table_is_the_declared_settings():
    documented = [row[0].strip("`") for row in table_rows("configuration.md")[1:]]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(declared_variables())


def _commands(group: click.Group, path: str = "wallet-proxy"):
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _commands(command, f"{path} {name}")
        else:
            yield f"{path} {name}", command


def test_the_commands_table_has_every_command_and_option():
    rows = {row[0]: row for row in table_rows("cli.md")[1:]}
    for path, command in _commands(main):
        usages = [cell for cell in rows if cell.startswith(f"`{path} ") or cell == f"`{path}`"]
        assert len(usages) == 1, f"docs/cli.md needs one row for {path}"
        usage = usages[0]
        for param in command.params:
            if isinstance(param, click.Argument):
                assert param.name.upper() in usage, (path, param.name)
                continue
            option = max(param.opts, key=len)
            assert option in usage, (path, option)
            default = param.default
            if not param.is_flag and isinstance(default, int | float | str):
                shown = f"{default:g}" if isinstance(default, float) else str(default)
                assert f"{option} {shown}" in usage, (path, option, default)
            for choice in getattr(param.type, "choices", ()):
                assert choice in usage, (path, option, choice)


def _error_codes() -> set[tuple[int, str]]:
    def tree(cls):
        yield cls
        for sub in cls.__subclasses__():
            yield from tree(sub)

    # A base that only groups its subclasses (no code of its own) is never answered as such.
    ours = {
        (cls.status, cls.code)
        for cls in tree(errors.WalletProxyError)
        if "code" in vars(cls) or not cls.__subclasses__()
    }
    # Werkzeug's own, as errors.py names them: an unknown route, a wrong method, a big body.
    werkzeug = {
        (exc.code, error_handlers._http_code(exc()))
        for exc in (NotFound, MethodNotAllowed, RequestEntityTooLarge)
    }
    return ours | werkzeug


def test_the_error_table_has_every_code_the_service_answers():
    rows = table_rows("api.md")
    (header,) = [row for row in rows if row[:2] == ["status", "code"]]
    documented = {(int(row[0]), row[1].strip("`")) for row in rows if row[0].isdecimal()}
    assert documented == _error_codes()
    assert header == ["status", "code", "when"]


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings: lower case, punctuation dropped,
    spaces as hyphens (code fences skipped)."""
    anchors, fenced = set(), False
    for line in page.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (heading := re.match(r"#{1,6} +(.*)", line)):
            text = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


def test_every_link_between_the_pages_leads_somewhere():
    pages = [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]
    checked = 0
    for page in pages:
        for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text()):
            if re.match(r"[a-z]+:", target):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            linked = (page.parent / path).resolve() if path else page
            assert linked.exists(), (page.name, target)
            if anchor and linked.suffix == ".md":
                assert anchor in heading_anchors(linked), (page.name, target)
            checked += 1
    assert checked > 30


def test_no_page_sends_people_to_the_demos_default_ports():
    """`make run PORT=... SANDBOX_PORT=...` moves the demo: pages reach it through the banner's
    $DEMO_URL and $SANDBOX_URL (or say the banner prints the address), never a fixed URL."""
    for page in [DOCS.parent / "README.md", *sorted(DOCS.glob("*.md"))]:
        fixed = re.findall(r"127\.0\.0\.1:800[01]/\S*", page.read_text())
        assert fixed == [], page.name


def code_map() -> set[str]:
    """The modules docs/architecture.md's code map names, as paths: a top-level entry's first
    word, and every `name.py` inside a folder's entry."""
    text = (DOCS / "architecture.md").read_text()
    block = text.split("## The code", 1)[1].split("```", 2)[1]
    found, folder = set(), None
    for line in block.splitlines():
        if not line.startswith("  ") or line.startswith("  —"):
            continue
        if not line.startswith("   "):  # a top-level entry: a module, or a folder
            first = line.split()[0]
            folder = first if first.endswith("/") else None
            if folder is None:
                found.add(f"wallet_proxy/{first}")
            continue
        if folder is not None:
            found |= {f"wallet_proxy/{folder}{name}" for name in re.findall(r"\b\w+\.py\b", line)}
    return found


def test_the_code_map_names_every_module():
    package = DOCS.parent / "wallet_proxy"
    modules = {path.relative_to(DOCS.parent).as_posix() for path in package.rglob("*.py")}
    documented = code_map()
    assert modules - documented == set(), "add these to docs/architecture.md's code map"
    assert documented - modules == set(), "rename or remove these in the code map"


# --- the architecture picture ----------------------------------------------------------------

PICTURE_SOURCE = DOCS / "architecture.dot"
PICTURE = DOCS / "architecture.svg"
REDRAW = "make docs/architecture.svg draws it again"


def drawn(output_format: str) -> str:
    """docs/architecture.dot drawn by Graphviz, which must have nothing to warn about."""
    dot = shutil.which("dot")
    if dot is None:
        pytest.fail("Graphviz is not installed: run `make test` (scripts/system-deps.sh)")
    result = subprocess.run(
        [dot, f"-T{output_format}", str(PICTURE_SOURCE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return result.stdout


def test_the_architecture_picture_has_a_node_for_every_module():
    """Nodes are named by the module's path, so a renamed module shows here by name."""
    package = DOCS.parent / "wallet_proxy"
    modules = {path.relative_to(DOCS.parent).as_posix() for path in package.rglob("*.py")}
    nodes = {
        shlex.split(line)[1] for line in drawn("plain").splitlines() if line.startswith("node ")
    }
    drawn_modules = {node for node in nodes if node.startswith("wallet_proxy/")}
    assert modules - drawn_modules == set(), f"add these nodes to {PICTURE_SOURCE.name} ({REDRAW})"
    assert drawn_modules - modules == set(), f"rename or remove these nodes ({REDRAW})"


def what_it_shows(svg: str) -> tuple[list[tuple[str, str]], list[str]]:
    """A drawing's nodes, edges and clusters by their titles, and every text it writes: what
    a reader sees, whatever layout another Graphviz version would choose."""
    namespace = {"svg": "http://www.w3.org/2000/svg"}
    root = ElementTree.fromstring(svg)  # noqa: S314 - our own file, and Graphviz's drawing
    shapes = sorted(
        (group.get("class", ""), group.findtext("svg:title", "", namespace))
        for group in root.iterfind(".//svg:g[@class]", namespace)
        if group.get("class") in ("node", "edge", "cluster")
    )
    texts = sorted(text.text or "" for text in root.iterfind(".//svg:text", namespace))
    return shapes, texts


def test_the_committed_picture_is_what_its_source_draws():
    assert what_it_shows(PICTURE.read_text()) == what_it_shows(drawn("svg")), (
        f"{PICTURE.name} is not {PICTURE_SOURCE.name}'s drawing ({REDRAW})"
    )
