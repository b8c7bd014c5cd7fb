"""The GPU check (scripts/gpu_check.py, run by scripts/gpu_check.sh).

On a CUDA machine ``python3 -m pytest -m gpu tests/test_gpu_check.py -s`` runs every check at full size
(a Qwen2.5-1.5B-shaped policy in bf16, 1.5B-shaped PRMs, a tiny sweep with ``device: cuda`` and
``Router.solve``) and prints its figures; without CUDA those skip. The default suite runs the checks
that take seconds on a CPU through the same code (small sizes), and the script's answer on a machine
without a GPU.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts" / "gpu_check.py")
gc = sys.modules.setdefault("gpu_check", importlib.util.module_from_spec(_spec))  # dataclasses look it up
_spec.loader.exec_module(gc)

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA device")


def _report(result) -> None:
    where = torch.cuda.get_device_name(0) if CUDA else "cpu"
    print(f"\n[{result.name}] on {where}: {'ok' if result.ok else 'FAILED'} in {result.seconds:.1f} s")
    gc._print_figures(result.figures)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.timeout(600)
@pytest.mark.parametrize("check", gc.CHECKS)
def test_the_gpu_check_passes_on_cuda(check, tmp_path):
    result = gc.run_check(check, "cuda", gc.SIZES["full"], tmp_path)
    _report(result)
    assert result.ok, result.error


@pytest.mark.parametrize("check", ["policy", "prms"])
def test_the_fast_checks_pass_on_the_cpu_at_tiny_sizes(check, tmp_path):
    """The engine, its shared-prefix sampler and the four PRM adapters, through the code the GPU runs."""
    result = gc.run_check(check, "cpu", gc.SIZES["tiny"], tmp_path)
    assert result.ok, result.error
    if check == "policy":
        f = result.figures
        assert f["shared_tokens"] == f["plain_tokens"] > 0 and f["decoder_argmax_agreement"] == 1.0
    else:
        assert set(result.figures) == set(gc.PRM_FAMILIES)


def test_the_wide_tokenizer_decodes_every_id_to_text():
    tok = gc.wide_tokenizer(1024)
    assert len(tok) == 1024 and tok.eos_token_id == 1023
    assert all(tok.decode([i]) for i in range(0, 1021, 7))  # the specials (last three) are skipped
    text = "What is 12 * 5? The answer is 60."
    assert tok.decode(tok(text).input_ids) == text


@pytest.mark.skipif(CUDA, reason="a CUDA device is present: the script would run its checks")
def test_without_a_gpu_the_script_says_so_and_exits_0(tmp_path):
    out = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--json", str(tmp_path / "r.json")],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert "no GPU found" in out.stdout and "--cpu" in out.stdout
    assert json.loads((tmp_path / "r.json").read_text())["gpu"] is False



def test_an_unknown_check_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        gc.main(["--only", "policy,nothing"])
    assert exit_.value.code == 2 and "unknown check" in capsys.readouterr().err
