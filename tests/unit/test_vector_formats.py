"""Vector formats other tools load: llama.cpp GGUF, repeng, steering-vectors, the paper's .pt.

Round trips must be bit-for-bit, and the GGUF pvlens writes must hold the same tensors under the
same names as the one repeng's own `export_gguf` writes for the same vector.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pvlens.vectors import PersonaVectors
from pvlens.vectors.formats import (
    detect_format,
    export_vectors,
    from_repeng,
    from_steering_vector,
    import_vectors,
    load_repeng,
    read_gguf,
    to_repeng,
    to_steering_vector,
    write_gguf,
)

N_LAYERS, D = 5, 64  # d_model of pvlens.tiny_model()


def _pv(seed: int = 0) -> PersonaVectors:
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(N_LAYERS, D, generator=g) * 3
    t[1, :4] = torch.tensor([1e-40, -0.0, float(np.finfo(np.float32).max), -1e-45])  # denormals, -0
    return PersonaVectors({"response_avg": t, "prompt_avg": -t}, {"trait": "evil", "model": "tiny"})


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype == torch.float32 and torch.equal(_bits(a), _bits(b))


def test_gguf_round_trip_is_bit_for_bit_and_leaves_block_0_out(tmp_path):
    pv = _pv()
    path = write_gguf(pv, tmp_path / "v.gguf")
    back = read_gguf(path)
    assert back.n_layers == N_LAYERS and back.reduction == "response_avg"
    assert _same_bits(back.vectors[1:], pv.vectors[1:])
    assert not back.vectors[0].any()  # llama.cpp cannot hold block 0
    assert back.trait == "evil" and back.metadata["model"] == "tiny"
    # the other reduction, and an explicit subset of layers
    sub = read_gguf(write_gguf(pv.use("prompt_avg"), tmp_path / "p.gguf", layers=[2, -1]))
    assert sub.reduction == "prompt_avg"
    assert _same_bits(sub.vectors[[2, 4]], pv.tensors["prompt_avg"][[2, 4]])
    assert not sub.vectors[[0, 1, 3]].any()


def test_gguf_layout_is_what_llama_cpp_reads(tmp_path):
    import gguf

    path = write_gguf(_pv(), tmp_path / "v.gguf", layers=[1, 3])
    r = gguf.GGUFReader(str(path))
    arch = r.get_field("general.architecture")
    assert bytes(arch.parts[arch.data[0]]).decode() == "controlvector"
    count = r.get_field("controlvector.layer_count")
    assert int(count.parts[count.data[0]][0]) == 2
    assert r.get_field("controlvector.model_hint") is not None
    # direction.N holds pvlens block N: llama.cpp adds it to the output of 0-based layer N
    assert [t.name for t in r.tensors] == ["direction.1", "direction.3"]
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and list(t.shape) == [D]
    with pytest.raises(ValueError, match="block 0"):
        write_gguf(_pv(), tmp_path / "z.gguf", layers=[0, 1])


def test_pvlens_gguf_holds_the_same_tensors_as_repengs_export(tmp_path):
    pv = _pv()
    layers = [1, 2, 4]
    ours = write_gguf(pv, tmp_path / "pvlens.gguf", layers=layers, model_hint="llama")
    to_repeng(pv, layers, model_type="llama").export_gguf(str(tmp_path / "repeng.gguf"))
    repeng = load_repeng()
    a = repeng.ControlVector.import_gguf(str(ours))
    b = repeng.ControlVector.import_gguf(str(tmp_path / "repeng.gguf"))
    assert a.model_type == b.model_type == "llama"
    assert sorted(a.directions) == sorted(b.directions) == layers
    for layer in layers:
        assert a.directions[layer].dtype == b.directions[layer].dtype == np.float32
        assert a.directions[layer].tobytes() == b.directions[layer].tobytes()
        assert a.directions[layer].tobytes() == pv.vectors[layer].numpy().tobytes()
    # and pvlens reads repeng's file to the same rows
    assert _same_bits(read_gguf(tmp_path / "repeng.gguf", n_layers=N_LAYERS).vectors[layers],
                      pv.vectors[layers])


def test_repeng_round_trips_both_ways():
    pv = _pv()
    cv = to_repeng(pv)
    assert sorted(cv.directions) == list(range(N_LAYERS))  # repeng can steer block 0 too
    back = from_repeng(cv, n_layers=N_LAYERS)
    assert _same_bits(back.vectors, pv.vectors)
    assert to_repeng(back, model_type=cv.model_type) == cv
    # a repeng vector on a few layers: zeros elsewhere, and back to the same object
    repeng = load_repeng()
    few = repeng.ControlVector("llama", {3: np.arange(D, dtype=np.float32), 1: -np.ones(D, np.float32)})
    pv2 = PersonaVectors.from_repeng(few)
    assert pv2.n_layers == 4 and not pv2.vectors[[0, 2]].any()
    assert pv2.to_repeng(model_type="llama") == few
    with pytest.raises(TypeError, match="ControlVector"):
        from_repeng(object())


def test_steering_vectors_round_trips_both_ways(tmp_path):
    from steering_vectors import SteeringVector

    pv = _pv()
    sv = to_steering_vector(pv, layers=[2, 3])
    assert isinstance(sv, SteeringVector) and sv.layer_type == "decoder_block"
    assert sorted(sv.layer_activations) == [2, 3]
    back = from_steering_vector(sv, n_layers=N_LAYERS)
    assert _same_bits(back.vectors[[2, 3]], pv.vectors[[2, 3]]) and not back.vectors[[0, 1, 4]].any()
    full = PersonaVectors.from_steering_vector(pv.to_steering_vector())
    assert _same_bits(full.vectors, pv.vectors)
    # the file: loads into the library with one line, and back into pvlens
    path = export_vectors(pv, tmp_path / "sv.pt", "steering-vectors")
    loaded = SteeringVector(**torch.load(path, weights_only=True))
    assert all(_same_bits(loaded.layer_activations[i], pv.vectors[i]) for i in range(N_LAYERS))
    assert detect_format(path) == "steering-vectors"
    assert _same_bits(import_vectors(path).vectors, pv.vectors)
    with pytest.raises(ValueError, match="decoder_block"):
        from_steering_vector(SteeringVector({0: torch.ones(D)}, layer_type="mlp"))


@pytest.mark.parametrize("fmt", ["gguf", "repeng", "steering-vectors", "paper-pt"])
def test_every_format_round_trips_through_export_and_import(tmp_path, fmt):
    pv = _pv(seed=3)
    path = export_vectors(pv, tmp_path / f"v.{fmt}", fmt)
    back = import_vectors(path, n_layers=N_LAYERS)
    start = 1 if fmt == "gguf" else 0  # pvlens's GGUF leaves block 0 out (llama.cpp rejects it)
    assert _same_bits(back.vectors[start:], pv.vectors[start:])


def test_bad_files_are_clear_errors(tmp_path):
    import gguf

    with pytest.raises(FileNotFoundError):
        import_vectors(tmp_path / "missing.gguf")
    (tmp_path / "text.gguf").write_text("not a gguf at all")
    with pytest.raises(ValueError, match="not a GGUF, torch or safetensors"):
        import_vectors(tmp_path / "text.gguf")
    w = gguf.GGUFWriter(str(tmp_path / "model.gguf"), "llama")  # a model, not a control vector
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ValueError, match="not a control vector"):
        read_gguf(tmp_path / "model.gguf")
    w = gguf.GGUFWriter(str(tmp_path / "odd.gguf"), "controlvector")
    w.add_tensor("direction.x", np.zeros(4, np.float32))
    w.write_header_to_file(), w.write_kv_data_to_file(), w.write_tensors_to_file(), w.close()
    with pytest.raises(ValueError, match="direction.N"):
        read_gguf(tmp_path / "odd.gguf")
    torch.save({"something": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a vector pvlens knows"):
        import_vectors(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="holds layer 4 but n_layers is 3"):
        import_vectors(export_vectors(_pv(), tmp_path / "v.gguf", "gguf"), n_layers=3)
    with pytest.raises(ValueError, match="out of range"):
        export_vectors(_pv(), tmp_path / "w.gguf", "gguf", layers=[9])
    with pytest.raises(ValueError, match="unknown format"):
        export_vectors(_pv(), tmp_path / "w.x", "onnx")


def test_cli_export_import_version_and_errors(tmp_path):
    from typer.testing import CliRunner

    import pvlens
    from pvlens.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == f"pvlens {pvlens.__version__}"
    src = _pv().save(tmp_path / "run" / "vectors.safetensors")
    gguf_path = tmp_path / "evil.gguf"
    res = runner.invoke(app, ["vectors", "export", str(src.parent), "--format", "gguf",
                              "--layers", "2,3", "--out", str(gguf_path)])
    assert res.exit_code == 0, res.output
    out = tmp_path / "back.safetensors"
    res = runner.invoke(app, ["vectors", "import", str(gguf_path), "--out", str(out), "--trait", "evil"])
    assert res.exit_code == 0, res.output
    back = PersonaVectors.load(out)
    assert _same_bits(back.vectors[[2, 3]], _pv().vectors[[2, 3]]) and back.trait == "evil"
    for fmt in ("paper-pt", "steering-vectors", "repeng"):
        res = runner.invoke(app, ["vectors", "export", str(src), "-f", fmt, "--out", str(tmp_path / f"x-{fmt}")])
        assert res.exit_code == 0, (fmt, res.output)
        res = runner.invoke(app, ["vectors", "import", str(tmp_path / f"x-{fmt}"), "--out", str(out)])
        assert res.exit_code == 0, (fmt, res.output)
        assert _same_bits(PersonaVectors.load(out).vectors, _pv().vectors)
    # bad input: one line, no traceback
    res = runner.invoke(app, ["vectors", "export", str(src), "-f", "gguf", "--layers", "0",
                              "--out", str(tmp_path / "z.gguf")])
    assert res.exit_code != 0 and "block 0" in str(res.exception or res.output) and "Traceback" not in res.output
    res = runner.invoke(app, ["vectors", "import", str(tmp_path / "nope.gguf"), "--out", str(out)])
    assert res.exit_code != 0 and "nope.gguf" in str(res.exception or res.output)
    res = runner.invoke(app, ["vectors", "export", str(src), "-f", "onnx"])
    assert res.exit_code == 2 and "unknown format" in res.output
