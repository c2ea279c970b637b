"""Every notebook in notebooks/ runs top to bottom (on the default model, offline, CPU).

The kernel is "python3" as seen from this interpreter: jupyter_client finds the spec ipykernel
installs into the venv (`.venv/share/jupyter/kernels`, or its built-in native spec) and runs it
with `sys.executable`, so a fresh clone where only `make install` ran needs nothing more.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

XDIST_PER_TEST = True  # independent notebooks: xdist spreads them over its workers (conftest.py)
NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
CELL_TIMEOUT = 1200  # seconds; generous for a loaded CPU


@pytest.mark.integration
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, tmp_path: Path) -> None:
    import nbformat
    from jupyter_client.kernelspec import KernelSpecManager
    from nbclient import NotebookClient

    spec = KernelSpecManager().get_kernel_spec("python3")
    # "python" in a spec's argv is replaced by sys.executable; anything else must be this venv.
    assert spec.argv[0] in {"python", "python3", sys.executable}, spec.argv

    nb = nbformat.read(path, as_version=4)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "MPLBACKEND": "Agg"}
    client = NotebookClient(nb, kernel_name="python3", timeout=CELL_TIMEOUT,
                            resources={"metadata": {"path": str(path.parent)}})
    t0 = time.time()
    client.execute(env=env)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    print(f"{path.name}: {time.time() - t0:.0f} s")
    nbformat.write(nb, tmp_path / path.name)  # the executed copy, for inspection on failure
