"""examples/quickstart.ipynb runs top to bottom (executed with nbclient, as CI does)."""

from __future__ import annotations

import os

import pytest

nbclient = pytest.importorskip("nbclient", reason="dev extra: pip install -e '.[dev]'")
nbformat = pytest.importorskip("nbformat", reason="dev extra: pip install -e '.[dev]'")

NOTEBOOK = os.path.join(os.path.dirname(__file__), "..", "examples", "quickstart.ipynb")


def _outputs(cell) -> str:
    parts = []
    for output in cell.get("outputs", ()):
        parts.append(output.get("text", ""))
        data = output.get("data", {})
        parts.extend(str(data.get(kind, "")) for kind in ("text/plain", "text/html",
                                                           "image/svg+xml"))
    return "\n".join(parts)


def test_quickstart_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the notebook works in a temporary folder
    monkeypatch.setenv("SMALLPOND_PROGRESS", "1")  # show progress even for quick actions
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    code = [c for c in notebook.cells if c.cell_type == "code"]

    def out(marker: str) -> str:
        return next(_outputs(c) for c in code if marker in c.source)

    assert "smallpond Session" in out("sp = smallpond.init(")
    assert "Not computed yet" in out('big = sp.partial_sql(')
    assert "schema unavailable" not in out('big = sp.partial_sql(')  # DuckDB in a kernel
    assert "smallpond show " in out("big.show(5)")  # the progress names the action
    assert "<progress" in "".join(_outputs(c) for c in code)  # live progress was drawn
    assert "users" in out("totals.write_parquet(")
    assert "<svg" in out("totals.graph()") and "rows" in out("totals.graph()")
    assert "smallpond job" in out("sp.report()") and "<svg" in out("sp.report()")
    assert "== batches-" in out("sp.logs(") and "top spender spent" in out("sp.logs(")
    assert os.listdir(tmp_path)  # it wrote into its temporary folder, nowhere else
