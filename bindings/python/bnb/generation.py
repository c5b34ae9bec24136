"""Greedy decoding of a Hugging Face causal language model with each decode step replayed from one
CUDA graph (issue 16).

At batch 1 a decode step of a 4-bit model is a few hundred small kernels, each done in
microseconds, and the host is what bounds transformers' `generate()`: its own loop, the model's
Python, and under `torch.compile(mode="reduce-overhead")` dynamo's guards on every layer, paid
per token. Here the prompt runs once eagerly, then one decode step (the model's forward on the
last token with a static KV cache, the arg-max, and the bookkeeping of the next position) is
captured into a CUDA graph, and every further token is one replay of it: the positions and the
tokens stay in device memory, so the host neither reads a token nor waits for one until the end.

    from bnb.generation import greedy_decode
    ids = greedy_decode(model, input_ids, max_new_tokens=256)   # like model.generate(input_ids,
                                                                  #   do_sample=False, max_new_tokens=256,
                                                                  #   min_new_tokens=256)

The tokens are generate()'s greedy ones for the same static cache: no attention mask (every row
of `input_ids` is a whole prompt, no padding) and no stopping at an end-of-sequence token
(exactly `max_new_tokens` are produced). output_logits=True also returns the logits each new token
was chosen from, as generate(output_logits=True, return_dict_in_generate=True) does. Needs torch
and transformers (StaticCache); on a device
without CUDA graphs (the CPU) the same step runs in a plain loop (cuda_graph=False)."""

import inspect

import torch

__all__ = ["greedy_decode"]


def greedy_decode(model, input_ids, max_new_tokens, cuda_graph=None, compile=False, output_logits=False):
    """input_ids [B, L] (int64, on the model's device) followed by max_new_tokens greedy tokens,
    [B, L + max_new_tokens]; with output_logits=True the pair (those ids, the logits each new token
    was chosen from, [B, max_new_tokens, vocab] in the model's output dtype). cuda_graph: replay
    the decode step from a CUDA graph (default: when input_ids is on a CUDA or ROCm device).
    compile: the decode step's model call goes through torch.compile (inductor, no CUDA graphs of
    its own), so the captured graph replays its fused kernels instead of eager mode's many small
    ones; the first call for a batch size and a total length (prompt + new tokens: the static
    cache's shape) compiles, later ones reuse it."""
    from transformers import StaticCache

    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype != torch.int64:
        raise ValueError("greedy_decode: input_ids must be a 2-D int64 tensor [batch, prompt length], got "
                         + (f"{input_ids.dtype} {tuple(input_ids.shape)}" if isinstance(input_ids, torch.Tensor)
                            else type(input_ids).__name__))
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"greedy_decode: max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    B, L = input_ids.shape
    if B == 0 or L == 0:
        raise ValueError(f"greedy_decode: input_ids {tuple(input_ids.shape)} holds no prompt")
    device = input_ids.device
    if cuda_graph is None:
        cuda_graph = device.type == "cuda"
    if cuda_graph and device.type != "cuda":
        raise ValueError(f"greedy_decode: cuda_graph=True needs input_ids on a CUDA device, not {device}")
    out_ids = input_ids.new_empty((B, L + max_new_tokens))
    out_ids[:, :L] = input_ids
    if max_new_tokens == 0:
        return (out_ids, input_ids.new_empty((B, 0, model.config.vocab_size), dtype=model.dtype)) \
            if output_logits else out_ids
    forward = torch.compile(model, dynamic=False) if compile else model  # (dynamo's cache serves later calls)
    with torch.no_grad():
        cache = StaticCache(config=model.config, max_cache_len=L + max_new_tokens)
        # the prompt's last logits only, as generate() asks for them (the same product shapes)
        keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        logits = model(input_ids, past_key_values=cache, cache_position=torch.arange(L, device=device),
                       use_cache=True, **keep).logits
        tok = logits[:, -1:].argmax(-1)  # [B, 1]: the token at position L
        out_ids[:, L:L + 1] = tok
        out_logits = None
        if output_logits:  # slot j: the logits of the token at position L + j
            out_logits = logits.new_empty((B, max_new_tokens, logits.shape[-1]))
            out_logits[:, :1] = logits[:, -1:]
        pos = torch.full((1,), L, dtype=torch.int64, device=device)  # the position of tok

        def step():
            # tok at position pos -> the next token, written at pos + 1; then pos + 1 becomes tok's place
            logits = forward(tok, past_key_values=cache, cache_position=pos, position_ids=pos.expand(B, 1),
                             use_cache=True).logits
            nxt = logits[:, -1:].argmax(-1)
            pos.add_(1)
            out_ids.index_copy_(1, pos, nxt)
            if out_logits is not None:
                out_logits.index_copy_(1, pos - L, logits[:, -1:])
            tok.copy_(nxt)

        steps = max_new_tokens - 1
        if not cuda_graph or steps < 3:
            for _ in range(steps):
                step()
            return (out_ids, out_logits) if output_logits else out_ids
        # Two real steps warm up the kernels and allocations on a side stream (as CUDA graph capture
        # wants), then the third is captured and every later token is one replay.
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            step()
            step()
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                step()
        except Exception as e:  # e.g. a layer that synchronises or allocates outside torch
            raise RuntimeError(f"greedy_decode: the model's decode step cannot be captured in a CUDA graph "
                               f"({type(e).__name__}: {e}); pass cuda_graph=False") from e
        for _ in range(steps - 2):
            graph.replay()
    return (out_ids, out_logits) if output_logits else out_ids

