"""Peak memory of the log-prob pass: chunked (``sequence_logprobs``) vs the naive
``log_softmax(model(...).logits)``, forward + backward, on a random Llama with a 32k vocabulary.

    .venv/bin/python benchmarks/memory.py [--vocab 32768] [--rows 16] [--length 256] [--chunk 1024]

Each variant runs in a fresh process (blocks of 1 MiB and more are mmapped, so freed memory leaves RSS at
once); the figure is the growth of peak RSS (``ru_maxrss``) over the RSS after the model and batch are built,
so the weights and the interpreter are not counted. Prints one markdown row per
variant (benchmarks/RESULTS.md, "Scale-out").
"""

import argparse
import json
import os
import resource
import subprocess
import sys


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(variant: str, vocab: int, rows: int, length: int, chunk: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from grouprl.model.configs import tiny_llama_config
    from grouprl.model.logprobs import position_ids_from_mask, sequence_logprobs

    torch.manual_seed(0)
    torch.set_num_threads(1)
    config = tiny_llama_config(vocab, hidden_size=256, num_layers=2, num_heads=4, intermediate_size=512,
                               max_position_embeddings=2 * length)
    model = AutoModelForCausalLM.from_config(config).eval()
    ids = torch.randint(4, vocab, (rows, length))
    mask = torch.ones_like(ids)
    T = length // 2
    base = _rss_mib()
    if variant == "chunked":
        logp, _ = sequence_logprobs(model, ids, mask, T, chunk_size=chunk)
    else:  # the naive way: the full [N, L, V] float32 logits and log-softmax
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask)).logits
        logp = torch.log_softmax(logits[:, -T - 1:-1], dim=-1).gather(-1, ids[:, -T:, None]).squeeze(-1)
    logp.sum().backward()
    return {"variant": variant, "peak_growth_mib": _rss_mib() - base, "logp_sum": float(logp.sum())}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--vocab", type=int, default=32_768)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant:
        print(json.dumps(measure(args.variant, args.vocab, args.rows, args.length, args.chunk)))
        return
    full = args.rows * (args.length // 2) * args.vocab * 4 / 2**20
    print(f"vocab {args.vocab}, {args.rows} rows × {args.length} tokens (scored: last {args.length // 2}); "
          f"one [N, T, V] float32 tensor = {full:,.0f} MiB")
    print("| variant | peak RSS growth, forward + backward (MiB) | sum of log-probs |")
    print("|---|---|---|")
    for variant in ("naive", "chunked"):
        cmd = [sys.executable, __file__, "--variant", variant, "--vocab", str(args.vocab),
               "--rows", str(args.rows), "--length", str(args.length), "--chunk", str(args.chunk)]
        # Large blocks straight from mmap: glibc's default sliding threshold keeps freed blocks in the heap,
        # so RSS would count memory that is no longer live.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": str(1 << 20)}
        out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"| {variant}{f' (chunk {args.chunk})' if variant == 'chunked' else ''} | "
              f"{r['peak_growth_mib']:,.0f} | {r['logp_sum']:.4f} |", flush=True)


if __name__ == "__main__":
    main()
