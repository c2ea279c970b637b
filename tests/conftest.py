"""Shared test set-up: offline by construction, and a per-module tiny random model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# Ray's default worker niceness (15) starves the tests' actors whenever anything else runs.
os.environ.setdefault("RAY_worker_niceness", "0")
# `dtype="auto"` means bf16 on CPUs with AMX / AVX512-bf16 and fp32 elsewhere. The tests compare
# code paths (KV cache vs batch, one pass vs many, engine vs TransformerLens) at fp32 tolerances,
# so pin fp32 on every machine; PVLENS_COMPUTE_DTYPE=auto runs the suite with hardware detection.
os.environ.setdefault("PVLENS_COMPUTE_DTYPE", "float32")

# Runtime checks of the annotations (types by beartype, tensor shapes by jaxtyping), installed
# before the first `import pvlens`. Always on for pvlens.core; PVLENS_TYPECHECK=1 extends them
# to all of pvlens (not yet the default: other packages still have annotations that fail).
# PEP 484's numeric tower: an int is a valid `float` argument, as static checkers also accept.
import jaxtyping  # noqa: E402

TYPECHECKED = ["pvlens"] if os.environ.get("PVLENS_TYPECHECK") == "1" else ["pvlens.core"]
jaxtyping.install_import_hook(
    TYPECHECKED, "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"
)


def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`make test` runs two workers with `--dist loadgroup`), keep each
    module's tests on one worker, so its module-scoped models load once, unless the module
    sets `XDIST_PER_TEST = True` (independent, long tests: the notebooks) or names its own
    group (the Ray modules share one, so one worker starts one Ray cluster)."""
    for item in items:
        module = getattr(item, "module", None)
        if module is None or item.get_closest_marker("xdist_group") or getattr(module, "XDIST_PER_TEST", False):
            continue
        item.add_marker(pytest.mark.xdist_group(module.__name__))


@pytest.fixture(scope="module", autouse=True)
def _module_keeps_torch_threads():
    """Each module leaves torch's thread count as it found it. `make test` runs two one-thread
    workers on two cores; a module that raised it to 2 made every later module on its worker
    oversubscribe the CPU, and OpenMP's barriers then stall (a notebook that set 2 threads next
    to a busy one-thread process took 414 s instead of 49 s on the 2-core Xeon)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer random Llama-architecture HookedTransformer with the small shipped SmolLM2
    tokenizer (no default model or GGUF wheel needed)."""
    import pvlens

    return pvlens.tiny_model()


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster (2 CPUs, 127.0.0.1) for every test module that uses Ray: starting
    one takes 10-20 s on a 2-core machine. Modules free their actors when they finish."""
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1",
             log_to_driver=False)
    yield
    ray.shutdown()


class Playground:
    """The `pvlens serve` page in headless Debian chromium, driven by Playwright (no browser
    download: the system chromium is launched; `make install` installs it)."""

    def __init__(self, page):
        self.page = page

    @staticmethod
    def chromium() -> str:
        import shutil

        found = (os.environ.get("PVLENS_CHROMIUM") or shutil.which("chromium")
                 or shutil.which("chromium-browser"))
        if not found:
            pytest.fail("chromium is not installed: run `make install` as root, or `sudo apt-get install chromium`")
        return found

    def submit(self, prompt: str, timeout_ms: int = 120_000) -> tuple[str, str]:
        """Type a prompt, press Generate, wait for both replies: (unsteered, steered) as shown."""
        self.page.fill("#prompt", prompt)
        self.page.click("#go")
        self.page.wait_for_selector("body[data-state=done]", timeout=timeout_ms)
        return self.page.inner_text("#reply-unsteered"), self.page.inner_text("#reply-steered")

    def alpha(self, trait: str) -> float:
        """The α the page shows (and sends) for `trait`."""
        return float(self.page.inner_text(f"#alpha-{trait}-out"))

    def slide_alpha(self, trait: str, target: float) -> float:
        """Move the trait's α slider with the keyboard to the first step at or past `target`."""
        self.page.focus(f"#alpha-{trait}")
        up = target >= self.alpha(trait)
        for _ in range(1000):
            value = self.alpha(trait)
            if (up and value >= target - 1e-9) or (not up and value <= target + 1e-9):
                return value
            self.page.keyboard.press("ArrowRight" if up else "ArrowLeft")
        raise AssertionError(f"the {trait} slider did not reach {target}")

    def set_layer(self, layer: int) -> None:
        self.page.focus("#layer")
        self.page.keyboard.press("Home")
        for _ in range(layer):
            self.page.keyboard.press("ArrowRight")
        assert self.page.input_value("#layer") == str(layer)


@pytest.fixture
def playground():
    """open(url) → a Playground on the loaded page; the browser closes after the test."""
    from contextlib import ExitStack

    from playwright.sync_api import sync_playwright

    with ExitStack() as stack:
        p = stack.enter_context(sync_playwright())

        def open_page(url: str, width: int = 1280, height: int = 900) -> Playground:
            browser = p.chromium.launch(executable_path=Playground.chromium(), headless=True)
            stack.callback(browser.close)
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(url)
            page.wait_for_selector("body[data-state=ready]", timeout=30_000)
            return Playground(page)

        yield open_page


@pytest.fixture(scope="session")
def benchmark_script():
    """Load `benchmarks/<name>.py` as a module (the scripts are not a package)."""
    import importlib.util
    from pathlib import Path

    folder = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str):
        spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load

