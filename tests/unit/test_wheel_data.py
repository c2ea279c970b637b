"""What `pip install pvlens` gets: the wheel built from this tree carries the shipped SAEs, and
pvlens imported from the unpacked wheel (not the checkout) finds and loads them by name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_ships_the_saes_and_loads_them_by_name(tmp_path: Path) -> None:
    src = tmp_path / "src"  # a copy: setuptools writes build/ and egg-info next to the sources
    shutil.copytree(ROOT / "pvlens", src / "pvlens", ignore=shutil.ignore_patterns("__pycache__"))
    for f in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copyfile(ROOT / f, src / f)
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(tmp_path / "dist")], check=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("pvlens-*.whl"))
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(site)
    shipped = sorted({n.split("/")[3] for n in names if n.startswith("pvlens/data/saes/") and n.endswith("cfg.json")})
    assert len(shipped) >= 3
    for name in shipped:
        for f in ("cfg.json", "sae_weights.safetensors", "pvlens_sae.json", "eval.json"):
            assert f"pvlens/data/saes/{name}/{f}" in names
    code = ("import pvlens, sys\n"
            "from pvlens.sae.shipped import shipped_sae_names\n"
            "from pvlens.sae.loading import resolve_sae\n"
            f"assert pvlens.__file__.startswith({str(site)!r}), pvlens.__file__\n"
            "names = shipped_sae_names()\n"
            "loaded = resolve_sae(names[0])\n"
            "print(len(names), loaded.layer, loaded.sae.cfg.d_sae)\n")
    # -I would drop the venv's site-packages too; PYTHONPATH first and cwd away from the checkout
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                         env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}, check=True)
    n, layer, d_sae = out.stdout.split()
    assert int(n) == len(shipped) and int(layer) in (6, 15, 24) and int(d_sae) == 2304
