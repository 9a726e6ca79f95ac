"""CLIP ViT-B/32 encoders as ONNX with random weights, for benchmarks (not committed).

Image: the architecture and shapes of OpenAI's ViT-B/32 visual tower (patch 32, width 768, 12
layers, 12 heads, MLP 3072 with QuickGELU, pre/post LayerNorm, projection to 512), so it costs what
the real model costs. Input `pixel_values` [N,3,224,224] -> output `image_embeds` [N,512].

Text (--text): OpenAI CLIP's text transformer (vocabulary 49,408, context 77, width 512, 12 layers,
8 heads, MLP 2048 with QuickGELU, causal attention, final LayerNorm, the end token's state
projected to 512). Inputs `input_ids`, `attention_mask` [N,seq] (seq <= 77, dynamic as in
Hugging Face's export) -> output `text_embeds` [N,512].

    python bench/make_clip_b32.py OUT_DIR [--text]
"""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

W, L, H, MLP, OUT, GRID = 768, 12, 12, 3072, 512, 7
rng = np.random.default_rng(0)
inits, nodes = [], []


def const(name, array):
    inits.append(numpy_helper.from_array(np.asarray(array), name))
    return name


def rand(name, shape, std=0.02):
    return const(name, rng.normal(0.0, std, size=shape).astype(np.float32))


def node(op, inputs, name, **attrs):
    nodes.append(helper.make_node(op, inputs, [name], **attrs))
    return name


def layer_norm(x, prefix, width=W):
    g = const(prefix + ".g", np.ones(width, np.float32))
    b = const(prefix + ".b", np.zeros(width, np.float32))
    return node("LayerNormalization", [x, g, b], prefix + ".out", axis=-1, epsilon=1e-5)


def linear(x, prefix, n_in, n_out):
    y = node("MatMul", [x, rand(prefix + ".w", (n_in, n_out))], prefix + ".mm")
    return node("Add", [y, const(prefix + ".b", np.zeros(n_out, np.float32))], prefix + ".out")


def main(out_dir):
    x = node("Conv", ["pixel_values", rand("conv1.w", (W, 3, 32, 32))], "patches", kernel_shape=[32, 32], strides=[32, 32])
    x = node("Reshape", [x, const("shape_nwp", np.array([0, W, GRID * GRID], np.int64))], "patches.flat")
    x = node("Transpose", [x], "tokens", perm=[0, 2, 1])
    batch = node("Slice", [node("Shape", ["pixel_values"], "in.shape"), const("s0", np.array([0], np.int64)), const("s1", np.array([1], np.int64))], "batch")
    cls_shape = node("Concat", [batch, const("one_w", np.array([1, W], np.int64))], "cls.shape", axis=0)
    cls = node("Expand", [rand("class_embedding", (1, 1, W)), cls_shape], "cls")
    x = node("Concat", [cls, x], "seq", axis=1)
    x = node("Add", [x, rand("positional_embedding", (GRID * GRID + 1, W), std=0.01)], "seq.pos")
    x = layer_norm(x, "ln_pre")
    heads = const("shape_heads", np.array([0, 0, H, W // H], np.int64))
    merge = const("shape_merge", np.array([0, 0, W], np.int64))
    scale = const("scale", np.array(1.0 / np.sqrt(W // H), np.float32))
    for i in range(L):
        p = f"l{i}"
        h = layer_norm(x, p + ".ln1")
        qkv = linear(h, p + ".in", W, 3 * W)
        q, k, v = (p + ".q", p + ".k", p + ".v")
        nodes.append(helper.make_node("Split", [qkv, const(p + ".split", np.array([W, W, W], np.int64))], [q, k, v], axis=2))
        q = node("Transpose", [node("Reshape", [q, heads], q + ".r")], q + ".t", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, heads], k + ".r")], k + ".t", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, heads], v + ".r")], v + ".t", perm=[0, 2, 1, 3])
        att = node("Softmax", [node("Mul", [node("MatMul", [q, k], p + ".qk"), scale], p + ".qks")], p + ".att", axis=-1)
        o = node("Transpose", [node("MatMul", [att, v], p + ".av")], p + ".avt", perm=[0, 2, 1, 3])
        o = linear(node("Reshape", [o, merge], p + ".o"), p + ".out", W, W)
        x = node("Add", [x, o], p + ".res1")
        h = linear(layer_norm(x, p + ".ln2"), p + ".fc", W, MLP)
        h = node("Mul", [h, node("Sigmoid", [node("Mul", [h, const(p + ".gelu", np.array(1.702, np.float32))], p + ".gs")], p + ".sig")], p + ".quickgelu")
        x = node("Add", [x, linear(h, p + ".proj", MLP, W)], p + ".res2")
    x = node("Gather", [x, const("cls_index", np.array(0, np.int64))], "cls.out", axis=1)
    x = layer_norm(x, "ln_post")
    node("MatMul", [x, rand("proj", (W, OUT))], "image_embeds")
    graph = helper.make_graph(
        nodes,
        "clip_vit_b32_random",
        [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, ["batch", 3, 224, 224])],
        [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, ["batch", OUT])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cm3 bench/make_clip_b32.py")
    model.ir_version = 9
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(model, os.path.join(out_dir, "model.onnx"))
    n = sum(int(np.prod(t.dims)) for t in inits)
    print(f"wrote {out_dir}/model.onnx: {n / 1e6:.1f}M parameters")


def main_text(out_dir, vocab=49408, ctx=77, w=512, layers=12, n_heads=8, mlp=2048):
    ids = "input_ids"
    x = node("Gather", [rand("token_embedding", (vocab, w)), ids], "tok", axis=0)
    # The sequence axis is dynamic (as in Hugging Face's export): positions and the causal mask
    # are cut to the batch's length.
    seq = node("Slice", [node("Shape", [ids], "ids.shape"), const("t.c1", np.array([1], np.int64)), const("t.c2", np.array([2], np.int64))], "seq.len")
    pos = node("Slice", [rand("positional_embedding", (ctx, w), std=0.01), const("t.z0", np.array([0], np.int64)), seq, const("t.ax0", np.array([0], np.int64))], "pos.cut")
    x = node("Add", [x, pos], "tok.pos")
    # The mask is an input of the Hugging Face export; OpenAI's model attends causally only, so it
    # just zeroes padding states here (cheap, and keeps the input in the graph).
    m = node("Cast", ["attention_mask"], "mask.f", to=TensorProto.FLOAT)
    x = node("Mul", [x, node("Unsqueeze", [m, const("ax2", np.array([2], np.int64))], "mask.u")], "tok.masked")
    causal = node("Slice", [const("causal", np.triu(np.full((ctx, ctx), -1e9, np.float32), 1)), const("t.z00", np.array([0, 0], np.int64)), node("Concat", [seq, seq], "seq.2", axis=0), const("t.ax01", np.array([0, 1], np.int64))], "causal.cut")
    heads = const("shape_heads", np.array([0, 0, n_heads, w // n_heads], np.int64))
    merge = const("shape_merge", np.array([0, 0, w], np.int64))
    scale = const("scale", np.array(1.0 / np.sqrt(w // n_heads), np.float32))
    for i in range(layers):
        p = f"l{i}"
        h = layer_norm(x, p + ".ln1", w)
        qkv = linear(h, p + ".in", w, 3 * w)
        q, k, v = (p + ".q", p + ".k", p + ".v")
        nodes.append(helper.make_node("Split", [qkv, const(p + ".split", np.array([w, w, w], np.int64))], [q, k, v], axis=2))
        q = node("Transpose", [node("Reshape", [q, heads], q + ".r")], q + ".t", perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [k, heads], k + ".r")], k + ".t", perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [v, heads], v + ".r")], v + ".t", perm=[0, 2, 1, 3])
        s_ = node("Add", [node("Mul", [node("MatMul", [q, k], p + ".qk"), scale], p + ".qks"), causal], p + ".qkm")
        att = node("Softmax", [s_], p + ".att", axis=-1)
        o = node("Transpose", [node("MatMul", [att, v], p + ".av")], p + ".avt", perm=[0, 2, 1, 3])
        o = linear(node("Reshape", [o, merge], p + ".o"), p + ".out", w, w)
        x = node("Add", [x, o], p + ".res1")
        h = linear(layer_norm(x, p + ".ln2", w), p + ".fc", w, mlp)
        h = node("Mul", [h, node("Sigmoid", [node("Mul", [h, const(p + ".gelu", np.array(1.702, np.float32))], p + ".gs")], p + ".sig")], p + ".quickgelu")
        x = node("Add", [x, linear(h, p + ".proj", mlp, w)], p + ".res2")
    x = layer_norm(x, "ln_final", w)
    # The end token has the largest id: its position is the argmax, as in CLIP.
    eot = node("ArgMax", [ids], "eot", axis=1, keepdims=1)
    x = node("GatherND", [x, eot], "eot.state", batch_dims=1)
    node("MatMul", [x, rand("text_projection", (w, OUT))], "text_embeds")
    graph = helper.make_graph(
        nodes,
        "clip_text_b32_random",
        [
            helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"]),
            helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "seq"]),
        ],
        [helper.make_tensor_value_info("text_embeds", TensorProto.FLOAT, ["batch", OUT])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="cm3 bench/make_clip_b32.py")
    model.ir_version = 9
    os.makedirs(out_dir, exist_ok=True)
    onnx.save(model, os.path.join(out_dir, "model.onnx"))
    n = sum(int(np.prod(t.dims)) for t in inits)
    print(f"wrote {out_dir}/model.onnx: {n / 1e6:.1f}M parameters")


if __name__ == "__main__":
    if "--text" in sys.argv[2:]:
        main_text(sys.argv[1])
    else:
        main(sys.argv[1])
