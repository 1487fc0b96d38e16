"""Every command's --help renders (at a narrow and a wide terminal), with its options in panels."""

from __future__ import annotations

import pytest

from tests.support.cli import run_in_process

COMMANDS = [
    [],
    ["resolve"],
    ["keygen"],
    ["export"],
    ["verify"],
    ["inspect"],
    ["import"],
    ["inventory"],
    ["dynakube"],
    ["dynatrace"],
    ["dynatrace", "options"],
    ["dynatrace", "versions"],
]
PANELS = {
    "export": ["Registry access", "Image signatures", "Output", "Dynatrace"],
    "import": ["Registry access", "Image signatures", "Output"],
    "verify": ["Image signatures", "Output"],
    "resolve": ["Registry access"],
    "inventory": ["Registry access", "Output"],
}


@pytest.mark.parametrize("columns", ["80", "200"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "dtbundle")
def test_help_renders(command: list[str], columns: str) -> None:
    proc = run_in_process(*command, "--help", env={"COLUMNS": columns, "TERM": "dumb"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    assert "Usage:" in proc.stdout and "--help" in proc.stdout
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= int(columns)
    for panel in PANELS.get(" ".join(command), []):
        assert panel in proc.stdout, f"{command}: no {panel!r} panel"


def test_help_shows_bracketed_syntax_literally() -> None:
    """Rich markup must not eat the brackets of HOST[:PORT][/PREFIX] or os/arch[/variant]."""
    export = run_in_process("export", "--help", env={"COLUMNS": "200"})
    assert "os/arch[/variant]" in export.stdout
    assert "(default: https://tuf-repo-cdn.sigstore.dev)" in export.stdout
    imported = run_in_process("import", "--help", env={"COLUMNS": "200"})
    assert "HOST[:PORT][/PREFIX]" in imported.stdout


def test_import_help_names_the_rollback_options_and_the_default_state_file() -> None:
    imported = run_in_process("import", "--help", env={"COLUMNS": "200"})
    assert "--state-file" in imported.stdout and "--allow-downgrade" in imported.stdout
    default = "(default: $XDG_STATE_HOME/dtbundle/imports.json, or ~/.local/state/dtbundle/imports.json)"
    assert default in " ".join(imported.stdout.replace("│", " ").split())  # however the panel wraps it


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in ([], ["dynatrace"], ["dynatrace", "options"])])
def test_help_shows_placeholders_and_examples(command: list[str]) -> None:
    proc = run_in_process(*command, "--help", env={"COLUMNS": "120"})
    assert "<bool>" not in proc.stdout and "<str>" not in proc.stdout
    assert "Examples:" in proc.stdout and "dtbundle " + " ".join(command) in proc.stdout.split("Examples:")[1]


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_shell_completion_script(shell: str) -> None:
    proc = run_in_process("--show-completion", shell)
    assert proc.returncode == 0, proc.stderr
    assert "_dtbundle_completion" in proc.stdout or "dtbundle" in proc.stdout
    assert "_DTBUNDLE_COMPLETE" in proc.stdout
