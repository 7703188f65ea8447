"""The command line entry point."""

from click.testing import CliRunner

from smallpond.cli import main


def test_cli_help_lists_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    assert "bench" in result.output
