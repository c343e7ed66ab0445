"""``notebooks/tweetgen.ipynb`` runs from top to bottom in a fresh kernel and draws its figures.

Executed with papermill at small parameters (a minute or two on 2 cores): the data, the
tokenizer, both tiny models trained and compared, generations from the packaged artifacts, and
an experiment recorded, decided and charted from a SQLite database.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.long

NOTEBOOK = REPO_ROOT / "notebooks" / "tweetgen.ipynb"
SMALL = {"TWEETS": 1500, "EPOCHS": 1, "SAMPLES": 8, "ROUNDS": 4, "USERS_PER_ROUND": 40}
# The cells that draw a matplotlib figure.
FIGURES = {"tokenizer", "curves", "compare-plot", "dashboard"}
CELL_TIMEOUT_S = 300


def _read(path: Path) -> Any:
    import nbformat

    return nbformat.read(path, as_version=4)


def test_the_notebook_is_kept_without_outputs_and_takes_parameters() -> None:
    notebook = _read(NOTEBOOK)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert all(not cell.outputs and cell.execution_count is None for cell in code), (
        "commit notebooks/tweetgen.ipynb without outputs (clear them before saving)"
    )
    tagged = [cell.id for cell in code if "parameters" in cell.metadata.get("tags", [])]
    assert tagged == ["parameters"]
    assert {cell.id for cell in code} >= FIGURES


def test_the_notebook_runs_in_a_fresh_kernel_and_draws_its_figures(
    sentiment140: Path, tmp_path: Path
) -> None:
    import papermill
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    # ipykernel's own python3 spec, which runs sys.executable: this environment's Python,
    # whatever kernels are registered elsewhere on the machine.
    kernel = KernelManager(
        kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[])
    )
    assert kernel.kernel_spec is not None
    assert kernel.kernel_spec.argv[0] == sys.executable
    out = tmp_path / "out"
    executed = tmp_path / "tweetgen.ipynb"
    papermill.execute_notebook(
        str(NOTEBOOK),
        str(executed),
        parameters={**SMALL, "DATA_DIR": str(sentiment140), "OUT_DIR": str(out)},
        kernel_name="python3",
        km=kernel,
        cwd=str(NOTEBOOK.parent),
        progress_bar=False,
        start_timeout=120,
        execution_timeout=CELL_TIMEOUT_S,
    )  # raises PapermillExecutionError, with the cell and its traceback, on any error

    notebook = _read(executed)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    drawn = {
        cell.id for cell in code for output in cell.outputs if "image/png" in output.get("data", {})
    }
    assert drawn >= FIGURES, f"no figure from cells {sorted(FIGURES - drawn)}"
    for model in ("lstm", "gpt2"):
        assert (out / model / "model.tar.gz").is_file()
    assert (out / "experiment.db").is_file()
    assert "plotly" in (out / "experiment.html").read_text(encoding="utf-8")
