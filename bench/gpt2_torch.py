"""PyTorch reference for `frugal bench`: nanoGPT-style GPT-2 124M training steps (SDPA flash attention, fused AdamW,
bf16 autocast, fp32 master weights), eager and torch.compile, on random tokens.

    python3 bench/gpt2_torch.py --batch 16 --seq 1024 [--steps 20] [--modes eager,compile] [--profile]

Prints one line per mode: median step time, tokens/s, MFU (6·N·tokens/s over 989 TFLOP/s) and peak memory."""
import argparse, math, time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.heads, C // self.heads).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab=50257, seq=1024, d=768, layers=12, heads=12):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(seq, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.lm_head = nn.Linear(d, vocab, bias=False)
        self.lm_head.weight = self.wte.weight  # tied, as GPT-2
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * layers) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0, std)
            elif name.endswith("bias"):
                nn.init.zeros_(p)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for b in self.h:
            x = b(x)
        logits = self.lm_head(self.ln_f(x))
        return F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1))


def bench(mode, args):
    torch.manual_seed(1)
    model = GPT(vocab=args.vocab, seq=max(args.seq, 1024)).cuda()
    n = sum(p.numel() for p in model.parameters())
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step_model = torch.compile(model) if mode == "compile" else model

    def step(x, y):
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_model(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    gen = torch.Generator(device="cuda").manual_seed(0)
    times = []
    torch.cuda.reset_peak_memory_stats()
    t_start = time.time()
    for s in range(args.warmup + args.steps):
        x = torch.randint(0, args.vocab, (args.batch, args.seq), device="cuda", generator=gen)
        y = torch.randint(0, args.vocab, (args.batch, args.seq), device="cuda", generator=gen)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = step(x, y)
        loss.item()
        if s >= args.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    med = times[len(times) // 2]
    tok = args.batch * args.seq / med
    print(f"torch {mode}: {n:,} parameters, batch {args.batch} x seq {args.seq}: median {med * 1e3:.2f} ms "
          f"(min {times[0] * 1e3:.2f}), {tok:,.0f} tokens/s, MFU {100 * 6 * n * tok / 989e12:.1f}% "
          f"(6N·tok/s = {6 * n * tok / 1e12:.1f} TFLOP/s), peak memory {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, "
          f"loss {loss.item():.4f}, wall {time.time() - t_start:.0f} s", flush=True)
    if args.profile:
        profile_kernels(mode, step, x, y)
    del model, opt, step_model
    torch.cuda.empty_cache()


def profile_kernels(mode, step, x, y, steps=2):
    """Prints the GPU kernels of `steps` more steps, by time per step (torch.profiler, CUDA activity only)."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step(x, y)
        torch.cuda.synchronize()
    rows = []
    for e in prof.key_averages():
        us = getattr(e, "self_device_time_total", None)
        if us is None:
            us = e.self_cuda_time_total
        if us > 0:
            rows.append((us / steps, e.count / steps, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    print(f"torch {mode}: GPU kernels per step, {total / 1e3:.2f} ms in all")
    for us, calls, name in rows[:40]:
        print(f"  {us / 1e3:8.3f} ms {calls:6.0f} calls  {name[:150]}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--modes", default="eager,compile")
    ap.add_argument("--profile", action="store_true", help="also print each mode's GPU kernels per step (torch.profiler)")
    ap.add_argument("--vocab", type=int, default=50257, help="50304: GPT-2's vocabulary padded to a multiple of 64, as nanoGPT")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name()}", flush=True)
    for m in args.modes.split(","):
        bench(m, args)
