"""PyTorch baseline for frugal.backend.cuda.CudaOpsBench: the same ops and shapes (GPT-2 small, B=8, T=1024),
fp32, timed with CUDA events (median of 5 batches of 20 calls after 3 warm-ups). Run on the GPU machine:
    PYTHONUNBUFFERED=1 python3 bench/cuda/torch_ops.py [--tf32]
"""
import sys

import torch
import torch.nn.functional as F

tf32 = "--tf32" in sys.argv
torch.backends.cuda.matmul.allow_tf32 = tf32
torch.backends.cudnn.allow_tf32 = tf32
dev = "cuda"
torch.manual_seed(1)
B, T, C, NH, HD, V = 8, 1024, 768, 12, 64, 50257
rows = B * T
params = 124_439_808


def rnd(*shape, grad=False):
    return torch.randn(*shape, device=dev, requires_grad=grad)


lines = []


def time(name, fn, flops=0.0, nbytes=0.0):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    ms = []
    for _ in range(5):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(20):
            fn()
        e.record()
        torch.cuda.synchronize()
        ms.append(s.elapsed_time(e) / 20)
    t = sorted(ms)[2]
    rate = f"{flops / t / 1e9:8.1f} TFLOP/s" if flops else f"{nbytes / t / 1e6:8.0f} GB/s   "
    line = f"{name:<40} {t:9.3f} ms  {rate}"
    lines.append(line)
    print(line)


with torch.no_grad():
    x, w = rnd(rows, C), rnd(C, 3 * C)
    dq, wte = rnd(rows, 3 * C), rnd(V, C)
    time("matmul fwd 8192x2304x768", lambda: x @ w, 2.0 * rows * 3 * C * C)
    time("matmul dW 768x2304x8192 (tA, acc)", lambda: w.addmm_(x.t(), dq), 2.0 * rows * 3 * C * C)
    time("matmul dX 8192x768x2304 (tB)", lambda: dq @ w.t(), 2.0 * rows * 3 * C * C)
    time("matmul lm head 8192x50257x768 (tB)", lambda: x @ wte.t(), 2.0 * rows * V * C)

q, k, v = (rnd(B, NH, T, HD, grad=True) for _ in range(3))
attn_flops = 4.0 * B * NH * T * (T + 1) / 2.0 * HD
with torch.no_grad():
    time("attentionForward B8 T1024 H12 D64 (sdpa)", lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True), attn_flops)
o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
do = torch.randn_like(o)
time("attentionBackward B8 T1024 H12 D64 (sdpa)",
     lambda: torch.autograd.grad(o, (q, k, v), do, retain_graph=True), 2.5 * attn_flops)

xl = rnd(rows, C, grad=True)
lnw, lnb = rnd(C, grad=True), rnd(C, grad=True)
with torch.no_grad():
    time("layerNormForward 8192x768", lambda: F.layer_norm(xl, (C,), lnw, lnb), 0, 2.0 * rows * C * 4)
y = F.layer_norm(xl, (C,), lnw, lnb)
dy = torch.randn_like(y)
time("layerNormBackward 8192x768", lambda: torch.autograd.grad(y, (xl, lnw, lnb), dy, retain_graph=True), 0, 4.0 * rows * C * 4)
with torch.no_grad():
    time("rmsNormForward 8192x768", lambda: F.rms_norm(xl, (C,), lnw, 1e-5), 0, 2.0 * rows * C * 4)
    h = rnd(rows, 4 * C)
    time("geluForward 8192x3072", lambda: F.gelu(h, approximate="tanh"), 0, 2.0 * h.numel() * 4)
    a, b = rnd(rows, C), rnd(rows, C)
    time("add 8192x768", lambda: a + b, 0, 3.0 * rows * C * 4)
    logits = rnd(rows, V)
    tgt = torch.randint(0, V, (rows,), device=dev)
    time("crossEntropy 8192x50257 (loss only)", lambda: F.cross_entropy(logits, tgt, reduction="none"), 0, 1.0 * rows * V * 4)
lg = logits.clone().requires_grad_(True)
loss = F.cross_entropy(lg, tgt)
time("crossEntropy 8192x50257 (+dlogits)",
     lambda: torch.autograd.grad(F.cross_entropy(lg, tgt), lg), 0, 3.0 * rows * V * 4)
del logits, lg, loss

p = torch.nn.Parameter(torch.randn(params, device=dev))
p.grad = torch.randn(params, device=dev)
with torch.no_grad():
    time("sumOfSquares 124M", lambda: torch.linalg.vector_norm(p.grad), 0, params * 4.0)
opt = torch.optim.AdamW([p], lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1, fused=True)
time("adamw 124M (fused, no clip)", lambda: opt.step(), 0, params * 4.0 * 7)

print(f"---- torch {torch.__version__}, {torch.cuda.get_device_name()}, tf32 {tf32}")
for line in lines:
    print(line)
