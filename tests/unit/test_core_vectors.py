"""PersonaVectors as a value: arithmetic, equality, unit, files, paper .pt import/export."""

from __future__ import annotations

import json

import pytest
import torch

from pvlens.vectors import LAYER_CONVENTION, PersonaVectors


def _pv(seed=0, n_layers=4, d=8, trait="evil", **more):
    g = torch.Generator().manual_seed(seed)
    t = {"response_avg": torch.randn(n_layers, d, generator=g),
         "prompt_avg": torch.randn(n_layers, d, generator=g), **more}
    return PersonaVectors(t, {"trait": trait, "model": "tiny", "n_pos": 10})


def test_access_and_reductions():
    pv = _pv()
    assert pv.reduction == "response_avg" and pv.n_layers == 4 and pv.d_model == 8 and len(pv) == 4
    assert pv.trait == "evil"
    assert torch.equal(pv[2], pv.tensors["response_avg"][2]) and torch.equal(pv[-1], pv.vectors[3])
    with pytest.raises(IndexError, match="hook_resid_post"):
        pv[4]
    other = pv.use("prompt_avg")
    assert torch.equal(other.vectors, pv.tensors["prompt_avg"]) and other.metadata == pv.metadata
    with pytest.raises(KeyError):
        pv.use("last_prompt")
    with pytest.raises(ValueError, match="shape"):
        PersonaVectors({"a": torch.zeros(2, 3), "b": torch.zeros(3, 3)})
    with pytest.raises(ValueError):
        PersonaVectors({})


def test_arithmetic_and_equality():
    a, b = _pv(0), _pv(1, trait="humorous")
    assert a == _pv(0) and a != b and a != "not vectors"
    s = a + b
    for k in a.tensors:
        assert torch.equal(s.tensors[k], a.tensors[k] + b.tensors[k])
        assert torch.equal((a - b).tensors[k], a.tensors[k] - b.tensors[k])
    assert s.metadata["derived_from"] == ["evil", "humorous"]
    assert 2 * a == a * 2 == a + a
    assert torch.allclose((a / 4).vectors, a.vectors * 0.25)
    assert (-a) + a == a * 0.0
    partial = PersonaVectors({"response_avg": torch.ones(4, 8)})
    assert set((a + partial).tensors) == {"response_avg"}
    with pytest.raises(ValueError, match="share no reduction"):
        a + PersonaVectors({"last_prompt": torch.ones(4, 8)})


def test_unit_norms_and_cosine():
    a = _pv()
    u = a.unit()
    for t in u.tensors.values():
        torch.testing.assert_close(t.norm(dim=-1), torch.ones(4))
    torch.testing.assert_close(a.cosine(a * 3.0), torch.ones(4))
    torch.testing.assert_close(a.cosine(-a), -torch.ones(4))
    torch.testing.assert_close(a.norms(), a.vectors.norm(dim=-1))


def test_save_load_round_trip_with_metadata(tmp_path):
    a = _pv(last_prompt=torch.randn(4, 8))
    path = a.save(tmp_path / "sub" / "vectors.safetensors")
    b = PersonaVectors.load(path)
    assert b == a and b.reduction == "response_avg"
    assert b.metadata["trait"] == "evil" and b.metadata["n_pos"] == 10
    assert b.metadata["layer_convention"] == LAYER_CONVENTION
    assert b.metadata["reductions"] == ["last_prompt", "prompt_avg", "response_avg"]
    assert PersonaVectors.load(tmp_path / "sub") == a  # a run folder works too
    assert PersonaVectors.load(path, reduction="last_prompt").reduction == "last_prompt"
    raw = path.read_bytes()  # safetensors: 8-byte header length, then a JSON header (no pickle)
    header = json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])
    assert json.loads(header["__metadata__"]["pvlens"])["trait"] == "evil"
    with pytest.raises(FileNotFoundError, match="pvlens extract"):
        PersonaVectors.load(tmp_path / "missing.safetensors")


def test_paper_pt_import_export_shifts_layers(tmp_path):
    paper = torch.randn(5, 8)  # paper layout: [n_layers + 1, d], row 0 = embeddings
    torch.save(paper, tmp_path / "evil_response_avg_diff.pt")
    pv = PersonaVectors.from_paper_pt(tmp_path / "evil_response_avg_diff.pt", trait="evil")
    assert pv.n_layers == 4 and pv.trait == "evil"
    for layer in range(4):  # pvlens row l == paper row l+1
        assert torch.equal(pv[layer], paper[layer + 1])
    assert PersonaVectors.load(tmp_path / "evil_response_avg_diff.pt") == pv

    out = pv.to_paper_pt(tmp_path / "out.pt")
    back = torch.load(out, weights_only=True)
    assert back.shape == (5, 8) and torch.equal(back[1:], paper[1:])
    assert torch.equal(back[0], torch.zeros(8))
    with_row0 = torch.load(pv.to_paper_pt(tmp_path / "o2.pt", embedding_row=paper[0]), weights_only=True)
    assert torch.equal(with_row0, paper)

    torch.save({"not": "a tensor"}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="bare tensor"):
        PersonaVectors.from_paper_pt(tmp_path / "bad.pt")


def test_builtin_vectors_for_the_default_model_load_and_missing_ones_say_how_to_make_them():
    from pvlens.vectors import PersonaVectors

    v = PersonaVectors.builtin("evil")
    assert (v.n_layers, v.d_model) == (30, 576)
    assert v.trait == "evil" and torch.isfinite(v.vectors).all()
    assert {"response_avg", "prompt_avg", "last_prompt"} <= set(v.tensors)
    with pytest.raises(FileNotFoundError, match="pvlens extract nosuchtrait"):
        PersonaVectors.builtin("nosuchtrait")
