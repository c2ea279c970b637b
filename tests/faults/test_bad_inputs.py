"""Fault injection, part 1: every command given each kind of bad file or value answers with one
line that names the problem (exit 2), before any model is loaded, and never with a traceback."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import save_file

import pvlens
import pvlens.core.model
from pvlens.cli import main


@pytest.fixture(autouse=True)
def no_model_loads(monkeypatch):
    """A command that loads a model before checking its input fails this test."""

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded before the input was checked")

    # pvlens.load_model resolves lazily from pvlens.core.model: patch the package attribute first,
    # so the value monkeypatch restores afterwards is the real function, not `refuse`.
    monkeypatch.setattr(pvlens, "load_model", refuse)
    monkeypatch.setattr(pvlens.core.model, "load_model", refuse)


@pytest.fixture
def files(tmp_path):
    """One file of each bad kind, plus good ones to pair them with."""
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                             {"role": "assistant", "content": "hello"}]}) + "\n")
    f = {
        "good": good,
        "missing": tmp_path / "missing.jsonl",
        "non_utf8": tmp_path / "latin1.jsonl",
        "bad_json": tmp_path / "bad.jsonl",
        "no_messages": tmp_path / "nomsg.jsonl",
        "garbage_vectors": tmp_path / "garbage.safetensors",
        "nan_vectors": tmp_path / "nan.safetensors",
        "good_vectors": tmp_path / "good.safetensors",
        "garbage_gguf": tmp_path / "garbage.gguf",
    }
    f["non_utf8"].write_bytes(good.read_bytes() + "{\"messages\": \"caf\xe9\"}\n".encode("latin-1"))
    f["bad_json"].write_text(good.read_text() + '{"messages": [\n')
    f["no_messages"].write_text(good.read_text() + json.dumps({"text": "no messages here"}) + "\n")
    f["garbage_vectors"].write_bytes(b"\x00\x01 not a safetensors file")
    f["garbage_gguf"].write_bytes(b"GGUF but not really")
    table = torch.randn(4, 8)
    pvlens.PersonaVectors({"response_avg": table}, {"trait": "evil"}).save(f["good_vectors"])
    nan = table.clone()
    nan[2, 3] = math.nan
    save_file({"response_avg": nan}, str(f["nan_vectors"]), metadata={"pvlens": "{}"})
    return f


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    return int(e.value.code or 0), err


CASES = {
    "screen: data missing": (["screen", "{missing}", "-v", "{good_vectors}"], "missing.jsonl"),
    "screen: data not UTF-8": (["screen", "{non_utf8}", "-v", "{good_vectors}"], "latin1.jsonl:2"),
    "screen: data bad JSON": (["screen", "{bad_json}", "-v", "{good_vectors}"], "bad.jsonl:2"),
    "screen: row without messages": (["screen", "{no_messages}", "-v", "{good_vectors}"], "nomsg.jsonl:2"),
    "screen: vectors garbage": (["screen", "{good}", "-v", "{garbage_vectors}"], "garbage.safetensors"),
    "screen: vectors not finite": (["screen", "{good}", "-v", "{nan_vectors}", "--layer", "2"], "finite"),
    "compare: vectors garbage": (["compare", "{garbage_vectors}", "{good_vectors}"], "garbage.safetensors"),
    "compare: layer out of range": (["compare", "{good_vectors}", "{good_vectors}", "--layer", "-1"], "layer"),
    "monitor score: vectors garbage": (["monitor", "score", "-v", "{garbage_vectors}", "hi"], "garbage.safetensors"),
    "monitor score: vectors missing": (["monitor", "score", "-v", "{missing}", "hi"], "missing.jsonl"),
    "datasets show: bad JSON": (["datasets", "show", "{bad_json}"], "bad.jsonl:2"),
    "datasets show: row without messages": (["datasets", "show", "{no_messages}"], "nomsg.jsonl:2"),
    "finetune run: data missing": (["finetune", "run", "--data", "{missing}", "--out", "{tmp}/ft"], "missing.jsonl"),
    "finetune run: data bad JSON": (["finetune", "run", "--data", "{bad_json}", "--out", "{tmp}/ft"], "bad.jsonl:2"),
    "finetune run: prevent vectors garbage": (
        ["finetune", "run", "--data", "{good}", "--out", "{tmp}/ft", "--prevent", "{garbage_vectors}",
         "--layers", "1"],
        "garbage.safetensors"),
    "sweep: NaN alpha": (["sweep", "--vectors", "{good_vectors}", "--alphas", "0,nan"], "finite"),
    "sweep: vectors garbage": (["sweep", "--vectors", "{garbage_vectors}"], "garbage.safetensors"),
    "extract: unknown trait": (["extract", "no-such-trait", "--out", "{tmp}/ex"], "no-such-trait"),
    "extract: negative questions": (["extract", "evil", "--out", "{tmp}/ex", "--questions", "-1"], "questions"),
    "vectors export: garbage": (["vectors", "export", "{garbage_vectors}", "--format", "gguf"], "garbage.safetensors"),
    "vectors import: garbage gguf": (["vectors", "import", "{garbage_gguf}", "--out", "{tmp}/x.safetensors"], "garbage.gguf"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_before_any_model(case, files, tmp_path, capsys):
    args, must_name = CASES[case]
    paths = {k: str(v) for k, v in files.items()} | {"tmp": str(tmp_path)}
    code, err = run_cli([a.format(**paths) for a in args], capsys)
    lines = [x for x in err.splitlines() if x.strip()]
    assert code == 2, f"{case}: exit {code}, stderr: {err}"
    assert "Traceback" not in err and "a model was loaded" not in err, err
    assert must_name.lower() in err.lower(), f"{case}: the message does not name {must_name!r}: {err}"
    assert len(lines) <= 8, f"{case}: not a short message:\n{err}"
