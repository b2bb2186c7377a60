"""`python -m graphattn.info` prints versions and the backend table without importing PyG or DGL."""

import subprocess
import sys

from graphattn.info import collect


def test_collect_lists_reference_backend_available():
    info = collect()
    assert info["torch"].startswith("2.")
    rows = {row["name"]: row for row in info["backends"]}
    assert rows["reference"]["status"] == "available"
    assert "float64" in rows["reference"]["dtypes"]


def test_module_runs_and_imports_no_framework():
    code = (
        "import runpy, sys; runpy.run_module('graphattn.info', run_name='__main__'); "
        "print('LOADED', 'torch_geometric' in sys.modules, 'dgl' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "reference: available" in out
    assert "LOADED False False" in out
