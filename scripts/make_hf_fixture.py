#!/usr/bin/env python3
"""Builds tests/data/hf_fixture: a tiny Llama-architecture model quantized through transformers with
the REAL bitsandbytes package, for the compatibility layer's checkpoint tests (tests/compat).

Run once, in an environment with bitsandbytes, transformers and torch (nothing is downloaded):

    python scripts/make_hf_fixture.py [--out tests/data/hf_fixture]

What it writes:
  float/          the float32 model (random init from the config below with a fixed seed)
  nf4_dq/         BitsAndBytesConfig(load_in_4bit, nf4, double quant, compute float32), save_pretrained
  fp4/            the same with fp4 and no double quant
  int8/           BitsAndBytesConfig(load_in_8bit) (threshold 6.0), save_pretrained
  logits.safetensors   the logits of each model above for the manifest's input ids (float32)
  manifest.json   versions of bitsandbytes/transformers/torch, the config, the input ids, and per
                  model its quantization arguments and the logits' key in logits.safetensors

The tests never import bitsandbytes' real package: they load these checkpoints through bnb's layer
and compare with the recorded logits, and they quantize float/ themselves and compare the saved
tensors with these files byte for byte.
"""

import argparse
import json
import os
import shutil

import torch

SEED = 0
CONFIG = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=256, max_position_embeddings=128, tie_word_embeddings=False,
              rms_norm_eps=1e-5)
INPUT_IDS = [[1, 17, 42, 99, 3, 250, 128, 7, 64, 33, 200, 5],
             [1, 9, 81, 160, 2, 44, 231, 90, 11, 12, 13, 14]]
# name -> BitsAndBytesConfig arguments (the tests build the same configs from these)
VARIANTS = {
    "nf4_dq": dict(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                   bnb_4bit_compute_dtype="float32"),
    "fp4": dict(load_in_4bit=True, bnb_4bit_quant_type="fp4", bnb_4bit_use_double_quant=False,
                bnb_4bit_compute_dtype="float32"),
    "int8": dict(load_in_8bit=True, llm_int8_threshold=6.0),
}


def build_float_model():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(SEED)
    config = LlamaConfig(**CONFIG)
    model = LlamaForCausalLM(config).to(torch.float32).eval()
    return model


def quantization_config(args):
    from transformers import BitsAndBytesConfig

    args = dict(args)
    if "bnb_4bit_compute_dtype" in args:
        args["bnb_4bit_compute_dtype"] = getattr(torch, args["bnb_4bit_compute_dtype"])
    return BitsAndBytesConfig(**args)


@torch.no_grad()
def logits_of(model):
    ids = torch.tensor(INPUT_IDS, dtype=torch.long)
    return model(input_ids=ids).logits.float().contiguous()


def main():
    import bitsandbytes
    import safetensors.torch
    import transformers
    from transformers import AutoModelForCausalLM

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "hf_fixture"))
    out = os.path.abspath(ap.parse_args().out)
    if os.path.exists(out):
        shutil.rmtree(out)
    os.makedirs(out)

    model = build_float_model()
    model.save_pretrained(os.path.join(out, "float"), safe_serialization=True)
    logits = {"float": logits_of(model)}
    variants = {}
    for name, args in VARIANTS.items():
        q = AutoModelForCausalLM.from_pretrained(os.path.join(out, "float"), dtype=torch.float32,
                                                 quantization_config=quantization_config(args),
                                                 device_map="cpu").eval()
        # Saved before any forward: on a CPU with AVX512-BF16, bitsandbytes' Linear4bit repacks its
        # weight for a bf16 kernel at the first eval forward and converts it back when saving, which
        # rounds absmax to bf16. The checkpoint must hold the quantization itself.
        q.save_pretrained(os.path.join(out, name), safe_serialization=True)
        for m in q.modules():  # the same fast path computes in bf16 even for a float32 compute dtype
            if hasattr(m, "support_avx512bf16_for_cpu"):
                m.support_avx512bf16_for_cpu = False
        logits[name] = logits_of(q)
        variants[name] = {"bnb_config": args, "logits_key": name}
        del q
    safetensors.torch.save_file(logits, os.path.join(out, "logits.safetensors"))

    manifest = {
        "made_by": "scripts/make_hf_fixture.py",
        "versions": {"bitsandbytes": bitsandbytes.__version__, "transformers": transformers.__version__,
                     "torch": torch.__version__},
        "seed": SEED,
        "config": CONFIG,
        "input_ids": INPUT_IDS,
        "float": {"path": "float", "dtype": "float32", "logits_key": "float"},
        "variants": variants,
        "logits_file": "logits.safetensors",
        "logits_note": "4-bit logits computed with bitsandbytes' bf16 CPU fast path off "
                       "(support_avx512bf16_for_cpu=False): dequantize + float32 matmul",
    }
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out) for f in fs)
    print(f"wrote {out}: {total / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
