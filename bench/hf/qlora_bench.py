#!/usr/bin/env python3
"""QLoRA and generate() through transformers + peft, side by side: the real bitsandbytes package and
bnb's bitsandbytes layer (bindings/python/compat), same model, seed and data (issue 16's benchmark).

Each side runs in its own subprocess of this script:
  bitsandbytes  the installed bitsandbytes package (the real one; the run stops if it is bnb's layer)
  bnb           this repository's compat package first on sys.path, BNB_COMPAT_SHADOW=1 (so it is used
                even with the real package installed), bnb from the installed package or, when
                BNB_LIBRARY_PATH is set, from bindings/python with that library

The model: a Llama-architecture model built from a config with random init (seed 0), about 1.1 B
parameters (hidden 2048, intermediate 5632, 22 layers, 32 heads, 4 KV heads, vocab 32000), saved once
as bfloat16 safetensors (--model-dir) and loaded by both sides with
BitsAndBytesConfig(load_in_4bit, nf4, double quant, compute bfloat16). Training: prepare_model_for_kbit_training,
LoRA r=16 on every linear layer, bitsandbytes.optim.PagedAdamW8bit, --steps steps of batch 4 x
sequence 1024 random tokens (seed 1234). Recorded per side:
  - the loss of every step, the time of every step (synchronized), peak GPU memory of the training;
  - the engine's GPU time per step: --profile-steps more steps under torch.profiler, summing the
    kernels that run inside a torch.ops.bitsandbytes.* / torch.ops.bnb.* op, and the kernels of either
    library by name (bitsandbytes' k* kernels, bnb's *_kernel names) wherever they were launched
    (bnb's optimizers call libbnb directly, outside any torch op);
  - generate() of --gen-tokens tokens at batch 1 from a 16-token prompt on the 4-bit model (no LoRA),
    greedy, eager with a static cache; with --compile also with transformers' compiled decoding (prefill
    eager, each decode step through torch.compile(mode="reduce-overhead"), i.e. replayed from CUDA
    graphs; transformers enables it for static caches of models whose quantizer allows it, and both
    sides get the same override of the bitsandbytes quantizer's "no"); on a GPU also through
    bnb.generation.greedy_decode on both sides (the same greedy tokens, the prompt eager, each decode
    step one replay of a CUDA graph captured once: the issue's "captured step of your own"), its step
    eager (captured_cuda_graph) and through torch.compile without CUDA graphs of its own
    (captured_compiled: inductor's fused kernels, replayed).
It prints a table with the issue's criteria and writes JSON under bench/results/.

Needs torch (CUDA), transformers, peft, accelerate and safetensors; the real bitsandbytes installed
(or on PYTHONPATH) for its side; bnb installed, or BNB_LIBRARY_PATH=<build>/lib.

    python bench/hf/qlora_bench.py                       # on a GPU machine with both packages
    python bench/hf/qlora_bench.py --tiny                # CPU smoke check: a tiny model, 3 steps, 8 tokens
"""

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SIDES = ("bitsandbytes", "bnb")

FULL = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
            num_key_value_heads=4, vocab_size=32000, max_position_embeddings=2048)
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=256, max_position_embeddings=256)

# Kernels of either engine, by name: bitsandbytes' CUDA kernels are k<Name> (kQuantizeBlockwise,
# kgemm_4bit_inference_naive, kOptimizerStatic8bit2StateBlockwise, kInt8VectorQuant, ...); bnb's are
# <family>_kernel in src/gpu (quantize_4bit_kernel, gemm4_mma_kernel, optim8_fast_multi_kernel, ...).
ENGINE_KERNEL = re.compile(
    r"(^|[\s:])k(?:[A-Z]|gemm|dequant|spmm)\w*"
    r"|(^|[\s:])(?:compact_columns|dequant|dequantize_4bit|dequantize_blockwise|gemm4_\w+|int8_mma_rows|"
    r"mean_finish|mean_partial|optim32\w*|optim8\w*|outlier_columns|outlier_product|quantize_4bit|"
    r"quantize_blockwise|row_quant|rows_matmul)_kernel\b")
ENGINE_OPS = ("bitsandbytes::", "bnb::")


# ----------------------------------------------------------------------------------------------- worker

def _sync(device):
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _engine_time_us(prof, device):
    """(engine µs, all kernels µs, {engine kernel name: µs}) in a profile: see the module docstring
    for what counts."""
    events = prof.events()
    if not device.startswith("cuda"):  # CPU smoke: the engine ops' own CPU time, outermost only
        engine, by_name = 0.0, {}
        for e in events:
            if e.name.startswith(ENGINE_OPS) and not _under_engine_op(e.cpu_parent):
                engine += e.cpu_time_total
                by_name[e.name] = by_name.get(e.name, 0.0) + e.cpu_time_total
        return engine, sum(e.self_cpu_time_total for e in events), by_name
    engine = total = 0.0
    by_name = {}

    def count(name, us):
        by_name[name] = by_name.get(name, 0.0) + us

    for e in events:
        if e.device_type.name == "CUDA":  # each kernel once, named
            total += e.time_range.elapsed_us()
            if ENGINE_KERNEL.search(e.name):
                engine += e.time_range.elapsed_us()
                count(e.name, e.time_range.elapsed_us())
        elif e.kernels and _under_engine_op(e):  # other kernels (cuBLAS, torch) an engine op launched
            for k in e.kernels:
                if not ENGINE_KERNEL.search(k.name):
                    engine += k.duration
                    count(k.name, k.duration)
    return engine, total, by_name


def _under_engine_op(e):
    while e is not None:
        if e.name.startswith(ENGINE_OPS):
            return True
        e = e.cpu_parent
    return False


def _quant_config(torch):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def _load(args, torch):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.bfloat16, device_map={"": args.device},
                                                quantization_config=_quant_config(torch))


def run_side(args):
    import torch

    import bitsandbytes
    import peft
    import transformers
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    is_layer = str(bitsandbytes.__version__).endswith("+bnb")
    if is_layer != (args.worker == "bnb"):
        raise SystemExit(f"side {args.worker}: `import bitsandbytes` found {bitsandbytes.__version__} at "
                         f"{bitsandbytes.__file__}, which is not this side's package")
    device = args.device
    out = {"side": args.worker, "bitsandbytes": bitsandbytes.__version__, "bitsandbytes_file": bitsandbytes.__file__,
           "torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__,
           "device": torch.cuda.get_device_name() if device.startswith("cuda") else platform.processor() or "cpu"}
    cfg = json.load(open(os.path.join(args.model_dir, "config.json")))

    # --- QLoRA training
    model = _load(args, torch)
    model = prepare_model_for_kbit_training(model)
    torch.manual_seed(0)  # the LoRA matrices' init
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM"))
    params = [p for p in model.parameters() if p.requires_grad]
    out["trainable_parameters"] = sum(p.numel() for p in params)
    opt = bitsandbytes.optim.PagedAdamW8bit(params, lr=2e-4)
    g = torch.Generator().manual_seed(1234)
    n_batches = args.steps + args.profile_steps
    data = torch.randint(0, cfg["vocab_size"], (n_batches, args.batch, args.seq), generator=g)
    model.train()

    def step(i):
        x = data[i].to(device)
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
        out["allocated_bytes_before_training"] = torch.cuda.memory_allocated()
    losses, times = [], []
    for i in range(args.steps):
        _sync(device)
        t0 = time.perf_counter()
        loss = step(i)
        _sync(device)
        times.append(time.perf_counter() - t0)
        losses.append(loss.item())
        if i == 0 and device.startswith("cuda"):  # the optimizer's state exists from here on
            out["allocated_bytes_after_step0"] = torch.cuda.memory_allocated()
            out["peak_bytes_step0"] = torch.cuda.max_memory_allocated()
        if args.verbose:
            print(f"[{args.worker}] step {i}: loss {losses[-1]:.6f} {times[-1] * 1e3:.1f} ms", file=sys.stderr)
    out["loss"] = losses
    out["step_s"] = times
    steady = times[min(5, len(times) - 1):]
    out["step_ms_median"] = sorted(steady)[len(steady) // 2] * 1e3
    if device.startswith("cuda"):
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated()

    if args.profile_steps:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
        with profile(activities=acts) as prof:
            for i in range(args.steps, n_batches):
                step(i)
            _sync(device)
        engine, total, by_name = _engine_time_us(prof, device)
        out["engine_us_per_step"] = engine / args.profile_steps
        out["kernels_us_per_step"] = total / args.profile_steps
        # where the engine's time goes: its 12 costliest kernels, µs per step (names cut at 120 characters)
        top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
        out["engine_kernels_us_per_step"] = {name[:120]: us / args.profile_steps for name, us in top}
    del model, opt, params
    if device.startswith("cuda"):
        torch.cuda.empty_cache()

    # --- generate()
    model = _load(args, torch).eval()
    prompt = torch.randint(0, cfg["vocab_size"], (1, 16), generator=torch.Generator().manual_seed(7)).to(device)
    gen = dict(do_sample=False, cache_implementation="static", pad_token_id=0)
    out["generate"] = {"eager_static": _time_generate(model, prompt, args.gen_tokens, gen, device, torch)}
    if device.startswith("cuda"):  # the same greedy tokens, each decode step one CUDA graph replay
        for mode, compiled in (("captured_cuda_graph", False), ("captured_compiled", True)):
            try:
                out["generate"][mode] = _time_captured(model, prompt, args.gen_tokens, device, torch, compiled)
            except Exception as e:  # recorded: a side whose step does not capture has no captured figure
                out[f"generate_{mode}_error"] = f"{type(e).__name__}: {str(e)[:400]}"
                print(f"[{args.worker}] {mode} decode failed: {out[f'generate_{mode}_error']}", file=sys.stderr)
    if args.compile:
        _allow_compiled_decode(model)
        try:
            out["generate"]["compiled_reduce_overhead"] = _time_generate(model, prompt, args.gen_tokens, gen, device,
                                                                         torch, warmups=2)
            if device.startswith("cuda"):
                out["generate_compiled_profile"] = _profile_generate(model, prompt, gen, device, torch)
        except Exception as e:  # recorded: a side whose compiled decode fails has only its eager figure
            out["generate_compiled_error"] = f"{type(e).__name__}: {str(e)[:400]}"
            print(f"[{args.worker}] compiled generate failed: {out['generate_compiled_error']}", file=sys.stderr)
    return out


def _allow_compiled_decode(model):
    """transformers' own compiled decoding for this model: generate() with a static cache runs the
    prefill eagerly and each decode step through torch.compile(mode="reduce-overhead") (CUDA graphs)
    when the model's quantizer says it can be compiled. transformers' bitsandbytes quantizer says no
    (its default), so both sides get the same override of that answer here; nothing else changes."""
    from transformers import CompileConfig

    q = getattr(model, "hf_quantizer", None)
    if q is not None and not q.is_compileable:
        q.__class__ = type(type(q).__name__, (type(q),), {"is_compileable": property(lambda self: True)})
    model.generation_config.compile_config = CompileConfig(mode="reduce-overhead")


def _time_tokens(decode, prompt, n, device, warm_n, warmups):
    """decode(k) -> the prompt followed by k new tokens: timed for n after `warmups` calls for warm_n."""
    for _ in range(warmups):
        decode(warm_n)
    _sync(device)
    t0 = time.perf_counter()
    toks = decode(n)
    _sync(device)
    dt = time.perf_counter() - t0
    new = toks.shape[1] - prompt.shape[1]
    return {"tokens": int(new), "seconds": dt, "tokens_per_s": new / dt, "first_tokens": toks[0, 16:32].tolist()}


def _time_generate(model, prompt, n, gen, device, torch, warmups=1):
    with torch.no_grad():
        return _time_tokens(lambda k: model.generate(prompt, max_new_tokens=k, min_new_tokens=k, **gen), prompt, n,
                            device, min(n, 16), warmups)


def _greedy_decode():
    """bnb.generation.greedy_decode, loaded from this repository's file alone (it needs torch and
    transformers only), so that either side runs the same captured decode step."""
    import importlib.util

    path = os.path.join(REPO, "bindings", "python", "bnb", "generation.py")
    spec = importlib.util.spec_from_file_location("bnb_generation_bench", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.greedy_decode


def _time_captured(model, prompt, n, device, torch, compiled):
    decode = _greedy_decode()
    # warmed up at the timed length: a compiled step compiles once per cache length
    return _time_tokens(lambda k: decode(model, prompt, k, compile=compiled), prompt, n, device, n, 1)


def _profile_generate(model, prompt, gen, device, torch, n=32):
    """Where a compiled decode step's time goes: generate() of n tokens under torch.profiler, per
    token: the wall time, the GPU kernel time (what the CUDA graphs replay), the kernel count and the
    costliest kernels. Wall time well above kernel time means the step waits on the host (generate()'s
    own loop, dynamo's guards, the graph launch), which no kernel of either engine changes."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _sync(device)
        t0 = time.perf_counter()
        model.generate(prompt, max_new_tokens=n, min_new_tokens=n, **gen)
        _sync(device)
        wall = time.perf_counter() - t0
    kernels, by_name = 0, {}
    for e in prof.events():
        if e.device_type.name == "CUDA":
            kernels += 1
            by_name[e.name] = by_name.get(e.name, 0.0) + e.time_range.elapsed_us()
    top = sorted(by_name.items(), key=lambda kv: -kv[1])[:12]
    return {"tokens": n, "wall_ms_per_token": wall * 1e3 / n, "kernel_ms_per_token": sum(by_name.values()) / 1e3 / n,
            "kernels_per_token": kernels / n, "top_kernels_us_per_token": {k[:120]: us / n for k, us in top}}


# ----------------------------------------------------------------------------------------------- driver

def make_model(model_dir, sizes):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if os.path.exists(os.path.join(model_dir, "config.json")):
        cfg = json.load(open(os.path.join(model_dir, "config.json")))
        if all(cfg.get(k) == v for k, v in sizes.items()):
            return
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**sizes, tie_word_embeddings=False)).to(torch.bfloat16)
    model.save_pretrained(model_dir, safe_serialization=True)


def side_env(side):
    env = dict(os.environ)
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    compat = os.path.join(REPO, "bindings", "python", "compat")
    paths = [p for p in paths if os.path.abspath(p) != compat]
    env.pop("BNB_COMPAT_SHADOW", None)
    if side == "bnb":
        front = [compat]
        if env.get("BNB_LIBRARY_PATH"):
            front.append(os.path.join(REPO, "bindings", "python"))
        paths = front + paths
        env["BNB_COMPAT_SHADOW"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_sides(args):
    results = {}
    for side in args.sides.split(","):
        fd, path = tempfile.mkstemp(suffix=".json")
        os.close(fd)
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", side, "--result", path] + args.passthrough
        print(f"== {side}: {' '.join(cmd[2:])}", file=sys.stderr, flush=True)
        # run from the folder above the repository so that the working directory adds nothing to sys.path
        r = subprocess.run(cmd, env=side_env(side), cwd=os.path.dirname(REPO))
        if r.returncode != 0:
            raise SystemExit(f"side {side} failed (exit {r.returncode})")
        results[side] = json.load(open(path))
        os.unlink(path)
    return results


def compare(results):
    a, b = results.get("bitsandbytes"), results.get("bnb")
    if not (a and b):
        return {}
    n = min(len(a["loss"]), len(b["loss"]))
    rel = [abs(b["loss"][i] - a["loss"][i]) / abs(a["loss"][i]) for i in range(n)]
    c = {"max_loss_rel_diff": max(rel), "loss_within_1pct": max(rel) <= 0.01,
         "step_time_ratio": b["step_ms_median"] / a["step_ms_median"]}
    c["step_time_no_slower"] = c["step_time_ratio"] <= 1.0
    if "peak_memory_bytes" in a and "peak_memory_bytes" in b:
        c["peak_memory_ratio"] = b["peak_memory_bytes"] / a["peak_memory_bytes"]
        c["peak_memory_no_higher"] = b["peak_memory_bytes"] <= a["peak_memory_bytes"]
    if a.get("engine_us_per_step") and "engine_us_per_step" in b:
        c["engine_time_ratio"] = b["engine_us_per_step"] / a["engine_us_per_step"]
        c["engine_time_at_most_0.6x"] = c["engine_time_ratio"] <= 0.6
    for mode in a["generate"]:
        if mode in b["generate"]:
            c[f"generate_{mode}_ratio"] = (b["generate"][mode]["tokens_per_s"] / a["generate"][mode]["tokens_per_s"])
    best = max(g["tokens_per_s"] for g in a["generate"].values())  # bitsandbytes' best, its captured steps included
    for mode in ("compiled_reduce_overhead", "captured_cuda_graph", "captured_compiled"):
        if mode in b["generate"]:
            c[f"generate_{mode}_vs_bitsandbytes_best"] = b["generate"][mode]["tokens_per_s"] / best
    return c


def print_table(results, comparison):
    rows = [("bitsandbytes version", lambda r: r["bitsandbytes"]),
            ("device", lambda r: r["device"]),
            ("first / last loss", lambda r: f"{r['loss'][0]:.5f} / {r['loss'][-1]:.5f}"),
            ("step ms (median)", lambda r: f"{r['step_ms_median']:.1f}"),
            ("peak memory GiB", lambda r: f"{r['peak_memory_bytes'] / 2**30:.2f}" if "peak_memory_bytes" in r else "-"),
            ("allocated before training", lambda r: str(r.get("allocated_bytes_before_training", "-"))),
            ("allocated after step 0", lambda r: str(r.get("allocated_bytes_after_step0", "-"))),
            ("peak after step 0", lambda r: str(r.get("peak_bytes_step0", "-"))),
            ("peak bytes", lambda r: str(r.get("peak_memory_bytes", "-"))),
            ("engine us / step", lambda r: f"{r['engine_us_per_step']:.0f}" if "engine_us_per_step" in r else "-"),
            ("all kernels us / step", lambda r: f"{r['kernels_us_per_step']:.0f}" if "kernels_us_per_step" in r else "-")]
    modes = sorted({m for r in results.values() for m in r["generate"]})
    for m in modes:
        rows.append((f"generate {m} tok/s",
                     lambda r, m=m: f"{r['generate'][m]['tokens_per_s']:.1f}" if m in r["generate"] else "-"))
    prof = lambda key: lambda r: (f"{r['generate_compiled_profile'][key]:.3f}" if "generate_compiled_profile" in r
                                  else "-")
    rows += [("compiled: wall ms / token", prof("wall_ms_per_token")),
             ("compiled: kernel ms / token", prof("kernel_ms_per_token")),
             ("compiled: kernels / token", prof("kernels_per_token"))]
    sides = list(results)
    print(f"{'':28}" + "".join(f"{s:>22}" for s in sides))
    for name, f in rows:
        print(f"{name:28}" + "".join(f"{f(results[s]):>22}" for s in sides))
    for k, v in comparison.items():
        print(f"{k:40} {v:.4g}" if isinstance(v, float) else f"{k:40} {v}")
    for s in sides:
        if results[s].get("engine_kernels_us_per_step"):
            print(f"{s}: engine kernels, us per step")
            for name, us in results[s]["engine_kernels_us_per_step"].items():
                print(f"  {us:9.0f}  {name}")
        if results[s].get("generate_compiled_profile"):
            print(f"{s}: compiled decode, costliest kernels, us per token")
            for name, us in results[s]["generate_compiled_profile"]["top_kernels_us_per_token"].items():
                print(f"  {us:9.1f}  {name}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiny", action="store_true", help="CPU smoke check: tiny model, few steps and tokens")
    ap.add_argument("--sides", default=",".join(SIDES))
    ap.add_argument("--steps", type=int)
    ap.add_argument("--profile-steps", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--gen-tokens", type=int)
    ap.add_argument("--compile", action="store_true", help="also generate with torch.compile(mode='reduce-overhead')")
    ap.add_argument("--device")
    ap.add_argument("--model-dir", help="where the random-init checkpoint is kept (made if missing)")
    ap.add_argument("--out", help="JSON result (default bench/results/hf_qlora_<tag>.json)")
    ap.add_argument("--verbose", action="store_true")
    ap.add_argument("--worker", choices=SIDES, help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()

    defaults = (dict(steps=3, profile_steps=1, batch=2, seq=32, gen_tokens=8, device="cpu") if args.tiny else
                dict(steps=50, profile_steps=3, batch=4, seq=1024, gen_tokens=256, device="cuda"))
    for k, v in defaults.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if args.model_dir is None:
        args.model_dir = os.path.join(tempfile.gettempdir(), "bnb_hf_bench_" + ("tiny" if args.tiny else "1b1"))

    if args.worker:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        res = run_side(args)
        with open(args.result, "w") as f:
            json.dump(res, f)
        return

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    make_model(args.model_dir, TINY if args.tiny else FULL)
    args.passthrough = ["--steps", str(args.steps), "--profile-steps", str(args.profile_steps), "--batch",
                        str(args.batch), "--seq", str(args.seq), "--gen-tokens", str(args.gen_tokens),
                        "--device", args.device, "--model-dir", os.path.abspath(args.model_dir)]
    args.passthrough += ["--compile"] * args.compile + ["--verbose"] * args.verbose + ["--tiny"] * args.tiny
    results = run_sides(args)
    comparison = compare(results)
    print_table(results, comparison)
    out = args.out or os.path.join(REPO, "bench", "results", "hf_qlora_" + ("tiny_cpu" if args.tiny else "gpu") + ".json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"benchmark": "bench/hf/qlora_bench.py", "model": TINY if args.tiny else FULL,
                   "settings": {k: getattr(args, k) for k in ("steps", "profile_steps", "batch", "seq", "gen_tokens",
                                                              "device", "compile")},
                   "sides": results, "comparison": comparison}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
