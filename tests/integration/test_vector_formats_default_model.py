"""The exported vectors mean the same thing elsewhere: steering the default model's HF twin
through repeng's ControlModel and steering-vectors' `apply` gives pvlens's greedy tokens at the
same block and α, and one block off does not."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.core.chat import stop_token_ids
from pvlens.core.model import ensure_default_model_dir, load_hf_model
from pvlens.vectors import PersonaVectors
from pvlens.vectors.formats import export_vectors, import_vectors, load_repeng

pytestmark = pytest.mark.integration

PROMPT = "How should I treat people who disagree with me?"
LAYER, ALPHA, N_NEW = 15, 4.0, 16  # α≈4 at block 15 visibly steers SmolLM2 (design notes)


@pytest.fixture(scope="module")
def setup():
    torch.set_num_threads(1)
    model = pvlens.load_model()
    hf, _ = load_hf_model(ensure_default_model_dir())
    vecs = PersonaVectors.builtin("evil")
    ours = pvlens.generate(model, [PROMPT], steer=pvlens.Steering(vecs[LAYER], LAYER, ALPHA, "all"),
                           max_new_tokens=N_NEW, temperature=0, progress=False)
    plain = pvlens.generate(model, [PROMPT], max_new_tokens=N_NEW, temperature=0, progress=False)
    ids = torch.tensor([pvlens.encode_prompt(model.tokenizer, PROMPT).ids])
    assert ours.chats[0].response_ids != plain.chats[0].response_ids  # the test is not vacuous
    return model, hf, vecs, ids, ours.chats[0].response_ids


def _hf_greedy(m, ids, tok) -> list[int]:
    stops = sorted(stop_token_ids(tok))
    with torch.no_grad():
        out = m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=N_NEW, do_sample=False,
                         eos_token_id=stops, pad_token_id=tok.pad_token_id)
    reply = out[0, ids.shape[1]:].tolist()
    return reply[:-1] if reply and reply[-1] in stops else reply  # pvlens drops end-of-turn


def test_repeng_control_model_steers_like_pvlens(setup, tmp_path):
    model, hf, vecs, ids, ours = setup
    repeng = load_repeng()
    # through the file: pvlens's GGUF read by repeng's own importer, steered by its ControlModel
    from_file = repeng.ControlVector.import_gguf(str(vecs.to_gguf(tmp_path / "evil.gguf")))
    for cv in (from_file, vecs.to_repeng([LAYER])):
        cm = repeng.ControlModel(hf, [LAYER])
        try:
            cm.set_control(cv, coeff=ALPHA)
            assert _hf_greedy(cm, ids, model.tokenizer) == ours
        finally:
            hf = cm.unwrap()
    cm = repeng.ControlModel(hf, [LAYER + 1])  # the same push one block later is another reply
    try:
        cm.set_raw_control({LAYER + 1: torch.tensor(ALPHA * from_file.directions[LAYER])})
        assert _hf_greedy(cm, ids, model.tokenizer) != ours
    finally:
        cm.unwrap()


def test_steering_vectors_apply_steers_like_pvlens(setup, tmp_path):
    model, hf, vecs, ids, ours = setup
    from steering_vectors import SteeringVector

    path = export_vectors(vecs, tmp_path / "evil.pt", "steering-vectors", layers=[LAYER])
    sv = SteeringVector(**torch.load(path, weights_only=True))
    with sv.apply(hf, multiplier=ALPHA):
        assert _hf_greedy(hf, ids, model.tokenizer) == ours
    assert import_vectors(path, n_layers=vecs.n_layers)[LAYER].equal(vecs[LAYER])
