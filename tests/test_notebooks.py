"""Every notebook in notebooks/ runs top to bottom (nbclient, a real kernel)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _need(module: str) -> None:
    if not os.environ.get("CI"):
        pytest.importorskip(module)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    for module in ("nbclient", "nbformat", "ipykernel", "pandas", "matplotlib"):
        _need(module)
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if path.name == "compose.ipynb":
        html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
        assert '<iframe sandbox=""' in html  # the message preview
        assert "ada@example.org" in html and "sent" in html  # the per-recipient result
        text = "".join("".join(o.get("text", "")) for o in outputs)
        assert "Weekly sales -> ('ada@example.org', 'archive@example.org')" in text
