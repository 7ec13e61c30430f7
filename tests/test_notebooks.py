"""Every notebook in notebooks/ runs top to bottom (nbclient, a real kernel)."""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from smtpkit.server import CaptureServer

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def _need(module: str) -> None:
    if not os.environ.get("SMTPKIT_TEST_STRICT"):
        pytest.importorskip(module)


SECRET = "nb-secret-" + secrets.token_hex(8)


@pytest.fixture
def server_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[CaptureServer]:
    """The forms' defaults point at a capture server with AUTH; the password is in the environment."""
    with CaptureServer(maildir=tmp_path / "server-mail", users={"ann": SECRET}) as server:
        for name, value in {
            "SMTPKIT_HOST": server.host,
            "SMTPKIT_PORT": str(server.port),
            "SMTPKIT_SECURITY": "none",
            "SMTPKIT_USER": "ann",
            "SMTPKIT_PASSWORD": SECRET,
        }.items():
            monkeypatch.setenv(name, value)
        yield server


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebooks_hold_no_outputs_or_widget_state(path: Path) -> None:
    nb = json.loads(path.read_text(encoding="utf-8"))
    assert "widgets" not in nb["metadata"]
    assert all(not cell.get("outputs") for cell in nb["cells"] if cell["cell_type"] == "code")
    assert nb["metadata"]["kernelspec"]["name"] == "python3"  # or JupyterLab stalls on a kernel picker


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path, server_env: CaptureServer) -> None:
    for module in ("nbclient", "nbformat", "ipykernel", "pandas", "matplotlib", "ipywidgets"):
        _need(module)
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, kernel_name="python3", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    # saved as nbclient saves it (widget state included): the password must be nowhere
    saved = tmp_path / path.name
    nbformat.write(nb, saved)
    leaked = [p for p in tmp_path.rglob("*") if p.is_file() and SECRET.encode() in p.read_bytes()]
    assert leaked == []
    if path.name == "forms.ipynb":
        assert "widgets" in nb.metadata  # the state was saved, and holds no password
        text = "".join("".join(o.get("text", "")) for o in outputs)
        assert "login: logged in as ann" in text  # the password from SMTPKIT_PASSWORD was used
        assert "['ada@example.org'] 12 rows" in text
    if path.name == "compose.ipynb":
        html = "".join(o.get("data", {}).get("text/html", "") for o in outputs)
        assert '<iframe sandbox=""' in html  # the message preview
        assert "ada@example.org" in html and "sent" in html  # the per-recipient result
        text = "".join("".join(o.get("text", "")) for o in outputs)
        assert "Weekly sales -> ('ada@example.org', 'archive@example.org')" in text
