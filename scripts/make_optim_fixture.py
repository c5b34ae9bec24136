#!/usr/bin/env python3
"""Builds tests/data/optim_fixture: optimizer state dicts written by the REAL bitsandbytes package,
for the compatibility layer's state-dict tests (tests/compat/test_optim.py).

Run once, on the CPU, in an environment with bitsandbytes and torch (nothing is downloaded):

    python scripts/make_optim_fixture.py [--out tests/data/optim_fixture]

For each optimizer below, with two parameters (64 x 80: 8-bit state; 10: 32-bit state, under
min_8bit_size) and fixed random gradients, it writes <name>.pt (torch.save, loadable with
weights_only=True):

  state_dict   optimizer.state_dict() after step 3, as bitsandbytes writes it
  params3      the parameters after step 3
  grads4       the gradients of step 4
  params4      the parameters after step 4
  state_dict4  optimizer.state_dict() after step 4
  kwargs       the constructor's keyword arguments

and manifest.json (versions, names). The tests never import bitsandbytes' real package: they load
state_dict into bnb's class of the same name, take step 4 and compare with params4 and state_dict4.
"""

import argparse
import copy
import json
import os

import torch

SEED = 0
SHAPES = [(64, 80), (10,)]
# name -> constructor keyword arguments
OPTIMIZERS = {
    "AdamW8bit": dict(lr=1e-2, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.1),
    "PagedAdamW8bit": dict(lr=1e-2),
    "AdamW": dict(lr=1e-2, weight_decay=0.1),
    "Lion8bit": dict(lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1),
    "RMSprop8bit": dict(lr=1e-3, alpha=0.9, eps=1e-6),
    "AdEMAMix8bit": dict(lr=1e-2, betas=(0.9, 0.99, 0.999), alpha=4.0),
    "SGD8bit": dict(lr=1e-2, momentum=0.9),
}


def main():
    import bitsandbytes

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "optim_fixture"))
    out = ap.parse_args().out
    os.makedirs(out, exist_ok=True)
    for name, kwargs in OPTIMIZERS.items():
        g = torch.Generator().manual_seed(SEED)
        params0 = [torch.randn(s, generator=g) for s in SHAPES]
        grads = [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(4)]
        params = [torch.nn.Parameter(p.clone()) for p in params0]
        opt = getattr(bitsandbytes.optim, name)(params, **kwargs)
        record = {"kwargs": kwargs, "grads4": grads[3]}
        for step, step_grads in enumerate(grads, start=1):
            for p, gr in zip(params, step_grads):
                p.grad = gr.clone()
            opt.step()
            if step == 3:  # a copy: state_dict() holds the live state tensors, which step 4 changes
                record["state_dict"] = copy.deepcopy(opt.state_dict())
                record["params3"] = [p.detach().clone() for p in params]
        record["params4"] = [p.detach().clone() for p in params]
        record["state_dict4"] = opt.state_dict()
        torch.save(record, os.path.join(out, f"{name}.pt"))
    manifest = {"made_by": "scripts/make_optim_fixture.py", "device": "cpu",
                "versions": {"bitsandbytes": bitsandbytes.__version__, "torch": torch.__version__},
                "seed": SEED, "shapes": SHAPES, "optimizers": sorted(OPTIMIZERS)}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
