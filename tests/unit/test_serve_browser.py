"""The playground in a real browser: headless Debian chromium driven by Playwright (the
`playground` fixture in tests/conftest.py; no browser download)."""

from __future__ import annotations

import torch

from pvlens.serve import Session, serve_in_background

PROMPT = "Tell me about your weekend."


def test_playground_in_chromium(tiny, playground):
    torch.manual_seed(1)
    session = Session(tiny, {"rand": torch.randn(tiny.cfg.n_layers, tiny.cfg.d_model)})
    try:
        with serve_in_background(session) as url:
            ui = playground(url)
            page = ui.page
            assert page.input_value("#layer") == "1" and ui.alpha("rand") == 0
            sent: list[dict] = []
            page.on("request", lambda r: sent.append(r.post_data_json) if r.url.endswith("/api/generate") else None)
            page.fill("#max-tokens", "12")
            unsteered, steered = ui.submit(PROMPT)
            assert unsteered.strip() and steered == unsteered  # α = 0
            assert sent[-1]["traits"] == [{"name": "rand", "alpha": 0}]  # exactly zero, not 1e-15
            assert sent[-1]["layer"] == 1 and sent[-1]["max_new_tokens"] == 12

            page.focus("#alpha-rand")
            page.keyboard.press("End")  # the slider to its largest α, then a few steps back
            top = ui.alpha("rand")
            alpha = ui.slide_alpha("rand", top * 0.8)
            assert 0 < alpha < top
            assert sent[-1]["traits"][0]["alpha"] == 0  # the slider alone sends nothing
            unsteered2, steered2 = ui.submit(PROMPT)
            assert unsteered2 == unsteered and steered2 != unsteered2
            assert sent[-1]["traits"] == [{"name": "rand", "alpha": alpha}]

            tokens = page.locator("#reply-steered .tok")
            assert tokens.count() > 0
            colours = {tokens.nth(i).evaluate("e => getComputedStyle(e).backgroundColor")
                       for i in range(tokens.count())}
            assert len(colours) > 1  # coloured by projection, not one flat colour
            assert page.is_visible("#legend") and "rand" in page.inner_text("#legend")

            page.fill("#prompt", "   ")
            page.click("#go")
            page.wait_for_selector("body[data-state=error]", timeout=30_000)
            assert page.is_visible("#error") and "prompt is empty" in page.inner_text("#error")
    finally:
        session.close()
