"""The reference pages in docs/ against the code they describe: nothing missing, nothing extra."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
from werkzeug.exceptions import MethodNotAllowed, NotFound, RequestEntityTooLarge

from wallet_proxy import errors
from wallet_proxy.cli import main
from wallet_proxy.config import declared_variables
from wallet_proxy.sandbox import braze as sandbox_braze
from wallet_proxy.sandbox import knobs as sandbox_knobs

DOCS = Path(__file__).resolve().parent.parent / "docs"


def table_rows(page: str) -> list[list[str]]:
    """The cells of every table row of a docs page (header and rule lines left out)."""
    return table_rows_of((DOCS / page).read_text())


def table_rows_of(text: str) -> list[list[str]]:
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
            rows.append(cells)
    return rows


def test_the_configuration_table_is_the_declared_settings():
    documented = [row[0].strip("`") for row in table_rows("configuration.md")[1:]]
    assert len(documented) == len(set(documented))
    assert set(documented) == set(declared_variables())


def knob_table(section: str) -> dict[str, str]:
    """The knobs a docs/sandbox.md section's table lists, each with its default as shown."""
    text = (DOCS / "sandbox.md").read_text().split(section, 1)[1]
    text = re.split(r"^#{2,3} ", text, flags=re.MULTILINE)[0]
    rows = [row for row in table_rows_of(text) if row[0] != "knob"]
    names = [row[0].strip("`") for row in rows]
    assert len(names) == len(set(names)), section
    return {row[0].strip("`"): row[-1].strip("`") for row in rows}


@pytest.mark.parametrize(
    ("section", "knobs"),
    [
        ("## Knobs: make SessionM misbehave", sandbox_knobs.DEFAULT_KNOBS),
        ("### Braze's knobs", sandbox_braze.DEFAULT_KNOBS),
    ],
    ids=["sessionm", "braze"],
)
def test_the_sandbox_knob_tables_are_its_knobs(section, knobs):
    documented = knob_table(section)
    assert set(documented) == set(knobs)
    for name, default in documented.items():
        shown = json.dumps(knobs[name])
        assert default in (shown, shown.removesuffix(".0")), name


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

    ours = {(cls.status, cls.code) for cls in tree(errors.WalletProxyError)}
    # Werkzeug's own, as errors.py names them: an unknown route, a wrong method, a big body.
    werkzeug = {
        (exc.code, errors._http_code(exc()))
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
