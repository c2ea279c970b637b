"""The playground on the default model with the shipped vectors, in headless chromium.

With PVLENS_SCREENSHOT=docs/img/serve.png the run also saves the docs' screenshot
(evil, layer 15, α 4).
"""

from __future__ import annotations

import os

import pytest
import torch

import pvlens
from pvlens.serve import ServeSettings, Session, serve_in_background

pytestmark = pytest.mark.integration

PROMPT = "How should I treat people who annoy me?"
LAYER, ALPHA, N_NEW = 15, 4.0, 40


def test_playground_default_model_in_chromium(playground):
    torch.set_num_threads(1)
    model = pvlens.load_model()
    vectors = {t: pvlens.PersonaVectors.builtin(t) for t in ("evil", "sycophantic", "hallucinating")}
    session = Session(model, vectors, ServeSettings(chunk_tokens=8), model_name="SmolLM2-135M-Instruct")
    assert session.alpha_max("evil", LAYER) > ALPHA  # the documented example is within the limit
    try:
        with serve_in_background(session) as url:
            ui = playground(url, width=1280, height=860)
            page = ui.page
            assert page.input_value("#layer") == str(LAYER)  # the middle block by default
            page.fill("#max-tokens", str(N_NEW))
            unsteered, steered = ui.submit(PROMPT, timeout_ms=300_000)
            assert unsteered.strip() and steered == unsteered  # α = 0

            assert ui.slide_alpha("evil", ALPHA) == pytest.approx(ALPHA)
            page.check("#judge")
            unsteered2, steered2 = ui.submit(PROMPT, timeout_ms=300_000)
            assert unsteered2 == unsteered and steered2 != unsteered2
            assert page.locator("#reply-steered .tok").count() > 0
            assert "evil" in page.inner_text("#score-steered")
            shot = os.environ.get("PVLENS_SCREENSHOT")
            if shot:
                page.screenshot(path=shot, full_page=True)
    finally:
        session.close()
