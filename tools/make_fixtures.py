"""Regenerates the Hugging Face parity fixtures in src/test/resources/fixtures/ (run on the GPU machine,
which has torch and transformers; CPU is enough).

For each model folder it writes config.json + model.safetensors (save_pretrained, float32) and
reference.safetensors + reference.json: input_ids/targets [B, T] (int32), logits, the mean cross-entropy
loss, grad.<name> for every parameter and adamw.<name> = the parameter after one AdamW step — all computed
in float64 on the float32 weights and stored as float32, which is the contract ModelParityTest reads.

  python3 tools/make_fixtures.py OUT_DIR                 # fresh models from the configs below, seed 1234
  python3 tools/make_fixtures.py OUT_DIR --from DIR      # recompute references for DIR/<model>/ weights and
                                                         # inputs, and report the largest difference from
                                                         # DIR's stored references (a reproducibility check)
"""
import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

B, T, SEED = 2, 32, 1234
LR, BETAS, EPS, WEIGHT_DECAY = 1e-3, (0.9, 0.95), 1e-8, 0.1

MODELS = {
    "gpt2-tiny": lambda: GPT2LMHeadModel(GPT2Config(
        vocab_size=512, n_positions=64, n_embd=64, n_layer=2, n_head=4, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)),
    "llama-tiny": lambda: LlamaForCausalLM(LlamaConfig(
        vocab_size=512, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=64, rms_norm_eps=1e-5,
        tie_word_embeddings=False)),
}


def reference(model, input_ids, targets):
    """Logits, loss, gradients and one AdamW step, in float64."""
    model = model.double()
    model.zero_grad()
    logits = model(input_ids=input_ids.long()).logits
    vocab = logits.shape[-1]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, vocab), targets.long().reshape(-1))
    loss.backward()
    named = list(model.named_parameters())  # tied weights appear once
    grads = {n: p.grad.detach().clone() for n, p in named}
    decay = [p for _, p in named if p.dim() >= 2]
    no_decay = [p for _, p in named if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                             {"params": no_decay, "weight_decay": 0.0}], lr=LR, betas=BETAS, eps=EPS)
    opt.step()
    stepped = {n: p.detach().clone() for n, p in named}
    return logits.detach(), loss.detach(), grads, stepped, [n for n, _ in named]


def write(out, name, model, input_ids, targets):
    folder = os.path.join(out, name)
    os.makedirs(folder, exist_ok=True)
    model.float().save_pretrained(folder, safe_serialization=True)
    logits, loss, grads, stepped, order = reference(model, input_ids, targets)
    tensors = {"input_ids": input_ids.int(), "targets": targets.int(),
               "logits": logits.float(), "loss": loss.reshape(1).float()}
    tensors.update({"grad." + n: g.float().contiguous() for n, g in grads.items()})
    tensors.update({"adamw." + n: p.float().contiguous() for n, p in stepped.items()})
    save_file(tensors, os.path.join(folder, "reference.safetensors"))
    facts = {
        "B": B, "T": T, "loss": loss.item(), "parameters": order,
        "loss_definition": "mean cross-entropy of logits[b,t] against targets[b,t] over all B*T positions",
        "adamw": {"lr": LR, "betas": list(BETAS), "eps": EPS,
                  "weight_decay": f"{WEIGHT_DECAY} on parameters with 2 or more dimensions, 0 on the rest",
                  "state": "fresh (step 1), gradients as in grad.*"},
        "precision": "float32 weights in model.safetensors; reference computed in float64, stored as float32",
        "made_with": f"transformers {transformers.__version__}, torch {torch.__version__}",
    }
    with open(os.path.join(folder, "reference.json"), "w") as f:
        json.dump(facts, f, indent=1)
    return tensors


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--from", dest="source", help="existing fixtures folder to reproduce")
    args = ap.parse_args()
    worst = 0.0
    for name, make in MODELS.items():
        torch.manual_seed(SEED)
        if args.source:
            src = os.path.join(args.source, name)
            model = type(make()).from_pretrained(src, torch_dtype=torch.float32)
            old = load_file(os.path.join(src, "reference.safetensors"))
            input_ids, targets = old["input_ids"], old["targets"]
        else:
            model = make()
            vocab = model.config.vocab_size
            input_ids = torch.randint(0, vocab, (B, T), dtype=torch.int32)
            targets = torch.randint(0, vocab, (B, T), dtype=torch.int32)
        new = write(args.out, name, model, input_ids, targets)
        if args.source:
            for key, ref in old.items():
                if key not in new:
                    sys.exit(f"{name}: {key} is in the old reference but was not recomputed")
                scale = ref.double().abs().max().item() or 1.0
                err = (new[key].double() - ref.double()).abs().max().item() / scale
                worst = max(worst, err)
            print(f"{name}: {len(old)} tensors recomputed, largest relative difference {worst:.3g}")
        else:
            print(f"{name}: written to {os.path.join(args.out, name)}")
    if args.source and worst > 1e-6:
        sys.exit(f"recomputed references differ from {args.source} by {worst:.3g} (> 1e-6)")


if __name__ == "__main__":
    main()
