#!/usr/bin/env python3
"""taming-transformers' GumbelVQ encoder on PyTorch CPU, the peer of `model/benches/vq_encode.rs`:
the `vqgan_gumbel_f8` architecture (taming's own Encoder and GumbelQuantize modules, random
weights), 256² images -> encoder, quant_conv, the Gumbel projection, argmax -> 32 x 32 codes,
under torch.no_grad() in eval mode. Prints `images_per_s <median over reps>`.

usage: vq_taming.py BATCH REPS THREADS
Needs torch, einops and taming-transformers-rom1504 (installed with --no-deps: only
taming.modules is imported, not the Lightning model classes).
"""
import statistics
import sys
import time

import torch
import torch.nn as nn
from taming.modules.diffusionmodules.model import Encoder
from taming.modules.vqvae.quantize import GumbelQuantize

# configs/model.yaml of the released vqgan_gumbel_f8 (ddconfig, n_embed, embed_dim).
DDCONFIG = dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128,
                ch_mult=[1, 1, 2, 4], num_res_blocks=2, attn_resolutions=[32], dropout=0.0)
N_EMBED, EMBED_DIM = 8192, 256


def main():
    batch, reps, threads = (int(a) for a in sys.argv[1:4])
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    encoder = Encoder(**DDCONFIG).eval()
    quant_conv = nn.Conv2d(DDCONFIG["z_channels"], EMBED_DIM, 1).eval()
    quantize = GumbelQuantize(DDCONFIG["z_channels"], EMBED_DIM, n_embed=N_EMBED).eval()
    x = (torch.rand(batch, 3, 256, 256) * 2 - 1) * 0.9

    def encode():
        with torch.no_grad():
            return quantize.proj(quant_conv(encoder(x))).argmax(dim=1)

    assert encode().shape == (batch, 32, 32)  # warm-up
    rates = []
    for _ in range(reps):
        t = time.perf_counter()
        encode()
        rates.append(batch / (time.perf_counter() - t))
    print(f"images_per_s {statistics.median(rates):.3f}")


if __name__ == "__main__":
    main()
