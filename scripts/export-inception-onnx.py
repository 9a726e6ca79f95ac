#!/usr/bin/env python3
"""Export pytorch-fid 0.3.0's FID Inception-v3 (pool3, 2048-d) to ONNX for `cm3_eval::fid`.

The exported graph is pytorch-fid's own module, built by pytorch-fid's own code:
`InceptionV3([3], resize_input=True, normalize_input=True)` (the FIDInceptionA/C/E_1/E_2 blocks,
their `count_include_pad=False` average pools, the max pool of Mixed_7c), wrapped only to flatten
its [N, 2048, 1, 1] output:

    input  `images`   float32 [N, 3, H, W], RGB in [0, 1] (torchvision's ToTensor of the image)
    output `features` float32 [N, 2048]

N, H and W are dynamic: the graph starts with pytorch-fid's bilinear resize to 299x299
(`F.interpolate(..., mode='bilinear', align_corners=False)`, an ONNX Resize) and its `2x - 1`.
cm3 resizes to 299x299 itself first, with the same interpolation, so that images of different
sizes share a batch; the Resize of a 299x299 input is then the identity.

Weights, one of:
  --weights FILE    pytorch-fid's pt_inception-2015-12-05-6726825d.pth (the FID network)
  --download        fetch that file from pytorch-fid's GitHub release (pytorch-fid's own
                    `load_state_dict_from_url`, cached in torch hub's checkpoints folder)
  --random-seed N   random weights of the same architecture, made to be shippable: every
                    parameter tensor repeats a short seeded 4-level pattern (87 MB gzip to ~1 MB), convolutions
                    are He-scaled, and BatchNorm's running statistics are calibrated on a seeded
                    input so that activations stay O(1) through all blocks (see random_state).

Usage (packages: torch, torchvision, pytorch-fid==0.3.0, onnx, onnxruntime, numpy):
    python scripts/export-inception-onnx.py --weights pt_inception-2015-12-05-6726825d.pth out.onnx
    python scripts/export-inception-onnx.py --random-seed 0 out.onnx
The export is checked with onnxruntime against the PyTorch module before the script returns.
"""
import argparse
import hashlib
import sys

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_fid import inception as pfi

OPSET = 17
# Pattern length of the random weights: a prime above every layer's output channel count (448), so
# no two output channels of a convolution get the same weights, with its float32 bytes inside
# deflate's 32 KiB window, so that gzip finds the repeats. (Shorter patterns gzip better but leave
# many features dead: 503 gave 725 of 2048 constant on the test images.)
PERIOD = 7919
SHA256_PREFIX = "6726825d"  # the hash prefix in pytorch-fid's weight file name


class Pool3(torch.nn.Module):
    """pytorch-fid's InceptionV3 with its pool3 output flattened to [N, 2048]."""

    def __init__(self, net):
        super().__init__()
        self.net = net

    def forward(self, images):
        return self.net(images)[0].flatten(1)


def build(state_dict):
    """pytorch-fid's InceptionV3([3]) loading `state_dict` through its own load path."""
    saved = pfi.load_state_dict_from_url
    pfi.load_state_dict_from_url = lambda url, progress=True: state_dict
    try:
        net = pfi.InceptionV3([3], resize_input=True, normalize_input=True)
    finally:
        pfi.load_state_dict_from_url = saved
    return net.eval()


def skeleton():
    """The FID Inception's modules (no weights): fid_inception_v3() minus its download."""
    net = pfi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = pfi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = pfi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = pfi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = pfi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = pfi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = pfi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = pfi.FIDInceptionE_1(1280)
    net.Mixed_7c = pfi.FIDInceptionE_2(2048)
    return net


def repeated(rng, shape):
    """A tensor of `shape` filled with one seeded pattern of PERIOD values, repeated.

    The values take 4 levels, (-1.5, -0.5, 0.5, 1.5) / sqrt(1.25) (mean 0, variance 1): each
    tensor's first period, stored as literals, then costs ~4x less than N(0, 1) floats.
    """
    n = int(np.prod(shape))
    levels = (rng.integers(0, 4, PERIOD) - 1.5) / np.sqrt(1.25)
    pattern = levels.astype(np.float32)
    return torch.from_numpy(np.resize(pattern, n).reshape(shape))


def random_state(seed):
    """A shippable random state dict for the FID Inception (see the module docstring).

    BatchNorm's per-channel scale gamma / sqrt(var + eps) is made the same for all channels of a
    layer (running_var is the layer's mean variance, gamma = 1): exporters fold BatchNorm into the
    convolution, and a per-channel scale would break the repeated pattern of its weights. The
    per-channel mean (calibrated) and a small random beta go into the bias.
    """
    rng = np.random.default_rng(seed)
    net = skeleton()
    state = net.state_dict()
    for name, value in state.items():
        if name.endswith("num_batches_tracked"):
            continue
        if value.dim() == 4:  # convolution: He-scaled
            fan_in = value.shape[1] * value.shape[2] * value.shape[3]
            state[name] = repeated(rng, value.shape) * np.float32(np.sqrt(2.0 / fan_in))
        elif name.startswith("fc."):
            state[name] = repeated(rng, value.shape) * np.float32(0.01)
        elif name.endswith("bn.weight"):
            state[name] = torch.ones_like(value)
        elif name.endswith("bn.bias"):
            state[name] = torch.from_numpy((0.1 * rng.standard_normal(value.shape[0])).astype(np.float32))
        elif name.endswith("running_mean"):
            state[name] = torch.zeros_like(value)
        elif name.endswith("running_var"):
            state[name] = torch.ones_like(value)
    net.load_state_dict(state)
    calibrate(build(state), rng)
    return state


def calibrate(model, rng):
    """Set each BatchNorm's running stats from its input on a seeded batch, layer by layer.

    A pre-hook runs before each BatchNorm in forward order, so every layer is calibrated on the
    activations of the already calibrated layers before it. The tensors are the state dict's.
    """
    def hook(bn, args):
        x = args[0].double()
        mean = x.mean(dim=(0, 2, 3))
        var = x.var(dim=(0, 2, 3), unbiased=False).mean()
        bn.running_mean.copy_(mean.float())
        bn.running_var.fill_(float(var))

    handles = [m.register_forward_pre_hook(hook) for m in model.modules()
               if isinstance(m, torch.nn.BatchNorm2d)]
    # Smooth random images (upsampled noise) in [0, 1]: closer to photos than white noise.
    noise = torch.from_numpy(rng.random((8, 3, 24, 32), dtype=np.float32))
    batch = F.interpolate(noise, size=(240, 320), mode="bilinear", align_corners=False)
    with torch.no_grad():
        model(batch)
    for h in handles:
        h.remove()


def fid_weights(path):
    if path is None:
        return pfi.load_state_dict_from_url(pfi.FID_WEIGHTS_URL, progress=True)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if not digest.startswith(SHA256_PREFIX):
        print(f"warning: {path} has sha256 {digest[:8]}..., pytorch-fid's file has {SHA256_PREFIX}...",
              file=sys.stderr)
    return torch.load(path, map_location="cpu")


def export(model, out):
    wrapped = Pool3(model).eval()
    example = torch.rand(2, 3, 320, 240, generator=torch.Generator().manual_seed(1))
    torch.onnx.export(
        wrapped, (example,), out, dynamo=False, opset_version=OPSET,
        input_names=["images"], output_names=["features"],
        dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"}, "features": {0: "batch"}},
        do_constant_folding=True,
    )
    return wrapped, example


def check(wrapped, out):
    """onnxruntime vs the PyTorch module on inputs of two sizes; returns the max |difference|."""
    import onnxruntime as ort

    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    worst = 0.0
    for shape in [(2, 3, 299, 299), (1, 3, 200, 350)]:
        x = torch.rand(*shape, generator=torch.Generator().manual_seed(sum(shape)))
        with torch.no_grad():
            want = wrapped(x).numpy()
        got = sess.run(["features"], {"images": x.numpy()})[0]
        worst = max(worst, float(np.abs(got - want).max()))
        print(f"check {shape}: features mean {want.mean():.4f} std over images "
              f"{want.std(axis=0).mean():.4f}, max |onnx - torch| {np.abs(got - want).max():.2e}",
              file=sys.stderr)
    return worst


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="pt_inception-2015-12-05-6726825d.pth")
    src.add_argument("--download", action="store_true", help="download pytorch-fid's FID weights")
    src.add_argument("--random-seed", type=int, help="random (compressible) weights, this seed")
    ap.add_argument("output", help="the .onnx file to write")
    args = ap.parse_args()
    torch.manual_seed(0)
    if args.random_seed is not None:
        state = random_state(args.random_seed)
    else:
        state = fid_weights(args.weights)
    model = build(state)
    wrapped, _ = export(model, args.output)
    worst = check(wrapped, args.output)
    if worst > 1e-4:
        sys.exit(f"onnxruntime differs from PyTorch by {worst:.2e}")
    print(f"wrote {args.output}", file=sys.stderr)


if __name__ == "__main__":
    main()
