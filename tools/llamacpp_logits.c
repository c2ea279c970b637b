// Next-token logits and greedy tokens from llama.cpp, optionally under a control vector.
// Built and driven by tools/llamacpp_check.py (the pvlens ↔ llama.cpp steering check); not part
// of pvlens itself. Uses only llama.cpp's public C API (include/llama.h).
//
// usage: llamacpp_logits MODEL.gguf PROMPTS.bin CVEC.bin|- IL_START IL_END N_GEN OUT.bin
//   PROMPTS.bin: records [int32 n][n × int32 token ids]
//   CVEC.bin:    float32 buffer as llama_set_adapter_cvec takes it (layer 1 at offset 0),
//                "-" for no control vector
//   OUT.bin:     per record [n_vocab × float32 logits of the last prompt token][N_GEN × int32 greedy ids]
// The KV cache is kept in f32 so that the only differences from pvlens's fp32 forward are the
// order of floating-point sums.
#include "llama.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void quiet(enum ggml_log_level level, const char * text, void * user) {
    (void) user;
    if (level >= GGML_LOG_LEVEL_ERROR) fputs(text, stderr);
}

static void * read_file(const char * path, long * size) {
    FILE * f = fopen(path, "rb");
    if (!f) { fprintf(stderr, "cannot open %s\n", path); exit(1); }
    fseek(f, 0, SEEK_END);
    *size = ftell(f);
    fseek(f, 0, SEEK_SET);
    void * buf = malloc(*size > 0 ? *size : 1);
    if (fread(buf, 1, *size, f) != (size_t) *size) { fprintf(stderr, "short read %s\n", path); exit(1); }
    fclose(f);
    return buf;
}

static int argmax(const float * x, int n) {
    int best = 0;
    for (int i = 1; i < n; i++) if (x[i] > x[best]) best = i;
    return best;
}

int main(int argc, char ** argv) {
    if (argc != 8) {
        fprintf(stderr, "usage: %s MODEL PROMPTS.bin CVEC.bin|- IL_START IL_END N_GEN OUT.bin\n", argv[0]);
        return 2;
    }
    const int il_start = atoi(argv[4]), il_end = atoi(argv[5]), n_gen = atoi(argv[6]);
    llama_log_set(quiet, NULL);
    llama_backend_init();
    struct llama_model_params mp = llama_model_default_params();
    struct llama_model * model = llama_model_load_from_file(argv[1], mp);
    if (!model) { fprintf(stderr, "cannot load model %s\n", argv[1]); return 1; }
    struct llama_context_params cp = llama_context_default_params();
    cp.n_ctx = 1024; cp.n_batch = 1024; cp.n_ubatch = 1024;
    cp.n_threads = 1; cp.n_threads_batch = 1;
    cp.type_k = GGML_TYPE_F32; cp.type_v = GGML_TYPE_F32;
    cp.flash_attn_type = LLAMA_FLASH_ATTN_TYPE_DISABLED;
    struct llama_context * ctx = llama_init_from_model(model, cp);
    if (!ctx) { fprintf(stderr, "cannot create context\n"); return 1; }
    const int n_embd = llama_model_n_embd(model);
    const int n_vocab = llama_vocab_n_tokens(llama_model_get_vocab(model));

    if (strcmp(argv[3], "-") != 0) {
        long size;
        float * cvec = read_file(argv[3], &size);
        if (llama_set_adapter_cvec(ctx, cvec, size / sizeof(float), n_embd, il_start, il_end) != 0) {
            fprintf(stderr, "llama_set_adapter_cvec failed\n");
            return 1;
        }
    }

    long psize;
    int32_t * prompts = read_file(argv[2], &psize);
    FILE * out = fopen(argv[7], "wb");
    if (!out) { fprintf(stderr, "cannot write %s\n", argv[7]); return 1; }
    long at = 0, n_words = psize / sizeof(int32_t);
    while (at < n_words) {
        int32_t n = prompts[at++];
        llama_memory_clear(llama_get_memory(ctx), true);
        if (llama_decode(ctx, llama_batch_get_one(prompts + at, n)) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
        at += n;
        const float * logits = llama_get_logits_ith(ctx, -1);
        fwrite(logits, sizeof(float), n_vocab, out);
        int32_t tok = argmax(logits, n_vocab);
        for (int i = 0; i < n_gen; i++) {
            fwrite(&tok, sizeof(int32_t), 1, out);
            if (i + 1 == n_gen) break;
            if (llama_decode(ctx, llama_batch_get_one(&tok, 1)) != 0) { fprintf(stderr, "decode failed\n"); return 1; }
            tok = argmax(llama_get_logits_ith(ctx, -1), n_vocab);
        }
    }
    fclose(out);
    llama_free(ctx);
    llama_model_free(model);
    llama_backend_free();
    return 0;
}
