"""PyTorch side of bench/train_vs_torch.sh: the same decoder as cm3's (Hugging Face
OPTForCausalLM without biases, dropout or LayerNorm parameters, tied embeddings), the same AdamW
(0.9/0.95, eps 1e-8, weight decay 0.1), global gradient clipping at 1.0, random token batches;
prints tokens/s of forward + backward + optimiser step (median over the timed steps).

Usage: python torch_train.py <layers> <d_model> <heads> <seq_len> <batch> <vocab> <steps> <threads>
"""
import statistics
import sys
import time

import torch
from transformers import OPTConfig, OPTForCausalLM


def main():
    layers, d, heads, seq_len, batch, vocab, steps, threads = map(int, sys.argv[1:9])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = OPTConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers, ffn_dim=4 * d,
                    num_attention_heads=heads, max_position_embeddings=seq_len,
                    word_embed_proj_dim=d, enable_bias=False, layer_norm_elementwise_affine=False,
                    do_layer_norm_before=True, dropout=0.0, attention_dropout=0.0,
                    activation_dropout=0.0, layerdrop=0.0, activation_function="relu",
                    tie_word_embeddings=True, pad_token_id=0)
    model = OPTForCausalLM(cfg).train()
    decay = [p for n, p in model.named_parameters() if "embed_positions" not in n]
    no_decay = [p for n, p in model.named_parameters() if "embed_positions" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95), eps=1e-8)
    g = torch.Generator().manual_seed(0)
    rates = []
    for step in range(steps):
        ids = torch.randint(13, vocab, (batch, seq_len), generator=g)
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        rates.append(batch * seq_len / (time.perf_counter() - t0))
    timed = rates[2:] if len(rates) > 4 else rates
    print(f"{statistics.median(timed):.1f}")


if __name__ == "__main__":
    main()
