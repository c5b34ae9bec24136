"""`bnb quantize` on a 1 B-parameter bf16 checkpoint: where the time goes (issue 22).

Writes (once, kept under --dir) a Llama-architecture checkpoint of TinyLlama-1.1B's shapes (hidden
2048, intermediate 5632, 22 layers, 32 heads, 4 KV heads, vocab 32000; 1.10 B parameters, 2.2 GB of
bf16 with random values) as one model.safetensors and as 5 shards with an index. Then times, each
the median of --reps runs:

  read      every byte of the input from the page cache (a 64 MiB-buffer read loop): the floor
            that any command reading the file pays here
  parse     `bnb inspect` of the file: mapping it and reading the header (the parser's share)
  quantize  `bnb quantize IN OUT --to nf4|fp4|int8` (1 and 2 threads; nf4 also with double quant
            and from the sharded directory), OUT on the same disk
  write     writing as many bytes as the nf4 output holds (dd from /dev/zero, conv=fsync): the
            disk's side of the output

and prints GB/s as input bytes / seconds. The page cache is warm (the file is read once before
timing): a cold read is the disk's speed, which this machine's virtual disk does not let us control.

    python3 bench/cli/quantize_bench.py [--bnb build/bin/bnb] [--dir /tmp/bnb_quant_bench]
        [--reps 5] [--json bench/results/cli_quantize_cpu.json]
"""

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))

HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, VOCAB = 2048, 5632, 22, 32, 4, 32000


def llama_tensors():
    """(name, shape) of a Llama checkpoint in the order transformers saves it."""
    kv = HIDDEN // HEADS * KV_HEADS
    out = [("model.embed_tokens.weight", (VOCAB, HIDDEN))]
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        out += [(p + "self_attn.q_proj.weight", (HIDDEN, HIDDEN)), (p + "self_attn.k_proj.weight", (kv, HIDDEN)),
                (p + "self_attn.v_proj.weight", (kv, HIDDEN)), (p + "self_attn.o_proj.weight", (HIDDEN, HIDDEN)),
                (p + "mlp.gate_proj.weight", (INTER, HIDDEN)), (p + "mlp.up_proj.weight", (INTER, HIDDEN)),
                (p + "mlp.down_proj.weight", (HIDDEN, INTER)), (p + "input_layernorm.weight", (HIDDEN,)),
                (p + "post_attention_layernorm.weight", (HIDDEN,))]
    return out + [("model.norm.weight", (HIDDEN,)), ("lm_head.weight", (VOCAB, HIDDEN))]


def write_safetensors(path, tensors, rng):
    """bf16 values of about the scale of trained weights (std 0.02), written as safetensors."""
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for name, shape in tensors:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(len(text).to_bytes(8, "little") + text)
        for name, shape in tensors:
            v = (rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * 0.02).view(np.uint32)
            f.write(((v + 0x7FFF + ((v >> 16) & 1)) >> 16).astype(np.uint16).tobytes())  # round to bf16
    os.replace(path + ".tmp", path)


def make_checkpoints(d):
    tensors = llama_tensors()
    single = os.path.join(d, "single")
    sharded = os.path.join(d, "sharded")
    if not os.path.exists(os.path.join(single, "model.safetensors")):
        os.makedirs(single, exist_ok=True)
        write_safetensors(os.path.join(single, "model.safetensors"), tensors, np.random.default_rng(0))
    if not os.path.exists(os.path.join(sharded, "model.safetensors.index.json")):
        os.makedirs(sharded, exist_ok=True)
        parts = np.array_split(np.arange(len(tensors)), 5)
        weight_map, total = {}, 0
        for k, idx in enumerate(parts):
            name = f"model-{k + 1:05d}-of-{len(parts):05d}.safetensors"
            part = [tensors[i] for i in idx]
            write_safetensors(os.path.join(sharded, name), part, np.random.default_rng(k + 1))
            for t, shape in part:
                weight_map[t] = name
                total += int(np.prod(shape)) * 2
        with open(os.path.join(sharded, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    return single, sharded, sum(int(np.prod(s)) for _, s in tensors)


def timed(cmd, reps, cleanup=None):
    times = []
    for _ in range(reps):
        if cleanup:
            cleanup()
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return times


def read_all(paths):
    buf = bytearray(64 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bnb", default=os.path.join(REPO, "build", "bin", "bnb"))
    ap.add_argument("--dir", default="/tmp/bnb_quant_bench")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    single, sharded, params = make_checkpoints(args.dir)
    src = os.path.join(single, "model.safetensors")
    in_bytes = os.path.getsize(src)
    out = os.path.join(args.dir, "out.safetensors")
    out_dir = os.path.join(args.dir, "out_dir")

    def clean():
        for p in (out,):
            if os.path.exists(p):
                os.unlink(p)
        shutil.rmtree(out_dir, ignore_errors=True)

    read_all([src])  # warm the page cache
    rows = []

    def row(what, times, nbytes=in_bytes, note=""):
        med = statistics.median(times)
        rows.append({"what": what, "median_s": med, "min_s": min(times), "runs": len(times),
                     "gb_per_s": nbytes / med / 1e9, "note": note})

    t = []
    for _ in range(args.reps):
        t0 = time.perf_counter()
        read_all([src])
        t.append(time.perf_counter() - t0)
    row("read (page cache)", t)
    row("parse (bnb inspect)", timed([args.bnb, "inspect", src], args.reps))
    env_threads = {}
    for label, extra in (("nf4", ["--to", "nf4"]), ("nf4, double quant", ["--to", "nf4", "--double-quant"]),
                         ("fp4", ["--to", "fp4"]), ("int8", ["--to", "int8"])):
        for threads in (2, 1) if label == "nf4" else (2,):
            cmd = [args.bnb, "quantize", src, out, *extra, "--threads", str(threads)]
            row(f"quantize {label}, {threads} thread{'s' if threads > 1 else ''}", timed(cmd, args.reps, clean))
            if label == "nf4" and threads == 2:
                out_bytes = os.path.getsize(out)
                env_threads["nf4_out_bytes"] = out_bytes
    row("quantize nf4, 2 threads, 5 shards (directory)",
        timed([args.bnb, "quantize", sharded, out_dir, "--to", "nf4", "--threads", "2"], args.reps, clean))
    clean()
    ob = env_threads["nf4_out_bytes"]
    t = timed(["dd", "if=/dev/zero", f"of={out}", f"bs={1 << 20}", f"count={(ob >> 20) + 1}", "conv=fsync", "status=none"],
              args.reps, clean)
    row("write the nf4 output's bytes (dd, fsync)", t, nbytes=ob, note="GB/s of the bytes written")
    clean()

    bench = subprocess.run([args.bnb, "bench", "--backend", "cpu", "--dtype", "bf16", "--threads", "2", "--json",
                            os.path.join(args.dir, "bench.json")], capture_output=True, text=True)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
    print(f"input: {src} ({params / 1e9:.2f} B parameters, {in_bytes / 1e9:.2f} GB bf16); "
          f"nf4 output {ob / 1e9:.3f} GB; CPU: {model}, {os.cpu_count()} cores")
    print(f"{'what':50s} {'median s':>9s} {'min s':>8s} {'GB/s in':>8s}")
    for r in rows:
        print(f"{r['what']:50s} {r['median_s']:9.3f} {r['min_s']:8.3f} {r['gb_per_s']:8.2f}  {r['note']}")
    print("bnb bench --backend cpu --dtype bf16 --threads 2 (the quantizer alone, in memory):")
    print(bench.stdout.strip())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": " ".join(sys.argv), "cpu": model, "cores": os.cpu_count(), "platform": platform.platform(),
                       "params": params, "input_bytes": in_bytes, "nf4_output_bytes": ob, "rows": rows,
                       "bnb_bench": bench.stdout, "lscpu": lscpu}, f, indent=1)


if __name__ == "__main__":
    main()
