#!/usr/bin/env python3
"""Hugging Face transformers' `generate` on PyTorch CPU, the peer of
`generate/benches/t2i_vs_hf.rs`: the bench decoder (OPT, 4 layers, d_model 256, 8 heads, ffn
1,024, vocabulary 8,192, no biases, LayerNorm without parameters: what cm3's decoder is) with
random weights, BATCH samples of 256 new tokens after a PROMPT-token prompt, top-p 0.9, the KV
cache on (`use_cache=True`), no guidance. Writes the weights to OUT (config.json +
model.safetensors) first if they are not there, so that cm3 samples with the same ones.
Prints `images_per_s <median over reps>`.

usage: generate_hf.py OUT BATCH REPS THREADS [PROMPT]
"""
import statistics
import sys
import time
from pathlib import Path

import torch
from transformers import OPTConfig, OPTForCausalLM


def main():
    out = Path(sys.argv[1])
    batch, reps, threads = (int(a) for a in sys.argv[2:5])
    prompt_len = int(sys.argv[5]) if len(sys.argv) > 5 else 16
    torch.set_num_threads(threads)
    if not (out / "model.safetensors").exists():
        torch.manual_seed(0)
        cfg = OPTConfig(vocab_size=8192, hidden_size=256, num_hidden_layers=4, ffn_dim=1024,
                        num_attention_heads=8, max_position_embeddings=1024,
                        word_embed_proj_dim=256, enable_bias=False,
                        layer_norm_elementwise_affine=False, do_layer_norm_before=True,
                        dropout=0.0, attention_dropout=0.0, activation_function="relu",
                        pad_token_id=1, bos_token_id=2, eos_token_id=2)
        OPTForCausalLM(cfg).save_pretrained(out, safe_serialization=True)
    model = OPTForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    vocab = model.config.vocab_size
    ids = torch.tensor([[(7919 * i) % (vocab - 16) + 16 for i in range(prompt_len)]] * batch)

    def run():
        t = time.perf_counter()
        with torch.no_grad():
            seq = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=True,
                                 top_p=0.9, top_k=0, max_new_tokens=256, min_new_tokens=256,
                                 use_cache=True, pad_token_id=1)
        assert seq.shape == (batch, prompt_len + 256), seq.shape
        return batch / (time.perf_counter() - t)

    run()  # warm-up
    print(f"images_per_s {statistics.median(run() for _ in range(reps)):.4f}")


if __name__ == "__main__":
    main()
