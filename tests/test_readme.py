"""The README stays true: its test command is CI's, and it documents every setting."""
from __future__ import annotations

import re

from gateway.config import OPTIONS
from support import ROOT

README = (ROOT / "README.md").read_text()


def _shell_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", README, re.S)


def test_ci_runs_the_readme_test_command():
    test_cmd = next(b.strip() for b in _shell_blocks() if "pytest" in b)
    ci = (ROOT / ".ci" / "run").read_text()
    assert test_cmd in ci.splitlines()


def test_readme_has_two_commands_first():
    blocks = _shell_blocks()
    assert "opencue-gateway" in blocks[0] and "pytest" in blocks[1]
    assert all(len(b.strip().splitlines()) == 1 for b in blocks[:2])


def test_every_setting_is_documented():
    for o in OPTIONS:
        if o.env:
            assert f"`{o.env}`" in README, o.env
        if o.flag:
            assert f"`{o.flag}`" in README, o.flag


def test_sandbox_rpc_list_is_current():
    from gateway.sandbox.server import rpc_list_markdown

    listed = re.search(r"<!-- sandbox-rpcs -->\n(.*?)<!-- /sandbox-rpcs -->", README, re.S)
    assert listed and listed.group(1) == rpc_list_markdown()


def test_a_newcomer_reads_quick_start_calling_it_then_the_demo():
    """The first hour first: the reference sections come after the Demo, not before it."""
    headings = re.findall(r"(?m)^(#{2,3}) (.+)$", README)
    assert [t for _, t in headings[:3]] == ["Quick start", "Calling it", "Demo"], headings[:4]
    level2 = [t for level, t in headings if level == "##"]
    assert level2[:2] == ["Quick start", "Demo"]  # the Demo right after the Quick start
    for reference in ("Errors", "Authentication", "Configuration", "Deploying"):
        assert level2.index(reference) > level2.index("Demo"), reference
