"""diffusers' side of tessera_bench_dit (tools/bench/dit_bench.cpp): the same random-weight SD3.5-medium
SD3Transformer2DModel step, or the same FLUX.1-dev slice (1 double + 1 single block at full width, each block also
timed alone, extrapolated to 19 + 38 blocks), with the same shapes, thread count and timing rule (one warm-up call
that also counts FLOPs, then the median of --runs timed steps).

Runs real diffusers 0.40.0 on Debian's python3-torch 1.13 (the LibTorch Tessera links): source
../shared/bench/diffusers/env.sh first (setup.sh once), and set OPENBLAS_CORETYPE to the core Tessera's
select_blas_core picks (tessera_bench_dit prints it on its "BLAS:" line). torch2_backfill.py provides
F.scaled_dot_product_attention (math: matmul, softmax, matmul) and torch.nn.RMSNorm, which FLUX/SD3 need on 1.13.

FLOPs: 2·MAC of every nn.Linear / nn.Conv2d (forward hooks) plus the two attention matmuls of every
scaled_dot_product_attention call — the same ops tools/bench/flop_counter.h counts.

  /usr/bin/python3 tools/bench/diffusers/bench_dit.py --model sd35m --tokens 1024 --dtype fp32 --cfg batched \\
      --runs 2 --threads 2
"""
import argparse
import math
import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("TESSERA_SHARED_BENCH",
                        os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "shared", "bench", "diffusers")))
sys.path.insert(0, SHARED)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import loadavg, peak_rss_mb  # noqa: E402
from torch2_backfill import install_torch2_backfills  # noqa: E402

# The configs of tools/bench/dit_configs.h.
SD35M = dict(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
             num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
             pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=384,
             dual_attention_layers=tuple(range(13)), qk_norm="rms_norm")
FLUX_SLICE = dict(patch_size=1, in_channels=64, num_layers=1, num_single_layers=1, attention_head_dim=128,
                  num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True,
                  axes_dims_rope=(16, 56, 56))
FLUX_DOUBLE, FLUX_SINGLE = 19, 38


def current_rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGESIZE") / (1024 * 1024)


class FlopCounter:
    """Linear/Conv2d forward hooks + the attention matmuls of F.scaled_dot_product_attention, while active."""

    def __init__(self, model):
        self.model, self.flops, self.hooks = model, 0.0, []

    def __enter__(self):
        def lin(m, i, o):
            self.flops += 2.0 * o.numel() * m.in_features

        def conv(m, i, o):
            self.flops += 2.0 * o.numel() * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]

        for m in self.model.modules():
            if isinstance(m, torch.nn.Linear):
                self.hooks.append(m.register_forward_hook(lin))
            elif isinstance(m, torch.nn.Conv2d):
                self.hooks.append(m.register_forward_hook(conv))
        self.sdpa = F.scaled_dot_product_attention

        def counted(*a, **kw):
            names = ("query", "key", "value")
            q, k, v = (a[i] if i < len(a) else kw[n] for i, n in enumerate(names))
            b = q.numel() // (q.shape[-2] * q.shape[-1])
            self.flops += 2.0 * b * q.shape[-2] * k.shape[-2] * (q.shape[-1] + v.shape[-1])
            return self.sdpa(*a, **kw)

        F.scaled_dot_product_attention = counted
        return self

    def __exit__(self, *exc):
        F.scaled_dot_product_attention = self.sdpa
        for h in self.hooks:
            h.remove()


WARMUP = True


def measure(runs, model, step):
    """One warm-up step with the FLOP counter, then `runs` timed steps (--no-warmup: the first timed step counts)."""
    ms, gflop = [], 0.0
    for r in range(-1 if WARMUP else 0, runs):
        first = r == (-1 if WARMUP else 0)
        count = FlopCounter(model) if first else None
        if count:
            count.__enter__()
        t = time.perf_counter()
        try:
            step()
        finally:
            if count:
                count.__exit__()
        if r >= 0:
            ms.append((time.perf_counter() - t) * 1000.0)
        if count:
            gflop = count.flops / 1e9
    return gflop, ms


def show(what, gflop, ms):
    med = statistics.median(ms)
    warm = " after a warm-up" if WARMUP else ", no warm-up"
    print(f"{what}: median {med:.1f} ms (min {min(ms):.1f}, max {max(ms):.1f}, {len(ms)} runs{warm}), {gflop:.1f} GFLOP, "
          f"{gflop / (med / 1000.0):.1f} GFLOP/s", flush=True)


def calls_of(cfg):
    return {"batched": [(0, 2)], "separate": [(0, 1), (1, 2)], "none": [(0, 1)]}[cfg]


def side_of(tokens):
    side = int(round(math.sqrt(tokens)))
    if side * side != tokens:
        sys.exit(f"--tokens {tokens} is not a square number of patches")
    return side


def bench_sd35m(a, dtype):
    from diffusers import SD3Transformer2DModel
    side, text = side_of(a.tokens), a.text_tokens or 77 + 256
    t0 = time.perf_counter()
    model = SD3Transformer2DModel(**SD35M).to(dtype).eval()
    build_s, weights_rss = time.perf_counter() - t0, current_rss_mb()
    params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 16, 2 * side, 2 * side, generator=g)
    prompt = torch.randn(2, text, 4096, generator=g)
    pooled = torch.randn(2, 2048, generator=g)
    timestep = torch.full((2,), 500.0)
    calls = calls_of(a.cfg)

    def step():
        for b, e in calls:
            model(hidden_states=latents[b:e].to(dtype), encoder_hidden_states=prompt[b:e].to(dtype),
                  pooled_projections=pooled[b:e].to(dtype), timestep=timestep[b:e], return_dict=False)

    start_load = loadavg()
    with torch.inference_mode():
        gflop, ms = measure(a.runs, model, step)
    print(f"diffusers SD3.5-medium SD3Transformer2DModel (random weights), {a.tokens} image tokens ({2 * side}x{2 * side} "
          f"latent, {16 * side} px) + {text} text tokens, {a.dtype}, cfg {a.cfg} ({len(calls)} call(s) of batch "
          f"{calls[0][1] - calls[0][0]} per step), {torch.get_num_threads()} threads")
    print(f"params: {params / 1e6:.1f} M (built in {build_s:.1f} s, RSS after build {weights_rss:.0f} MB)")
    show("step", gflop, ms)
    if len(calls) > 1:
        print(f"per call: median {statistics.median(ms) / len(calls):.1f} ms")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    print(f"load average: {start_load} at start, {loadavg()} at end")


def bench_flux_slice(a, dtype):
    from diffusers import FluxTransformer2DModel
    side, text = side_of(a.tokens), a.text_tokens or 512
    t0 = time.perf_counter()
    model = FluxTransformer2DModel(**FLUX_SLICE).to(dtype).eval()
    build_s, weights_rss = time.perf_counter() - t0, current_rss_mb()
    params = sum(p.numel() for p in model.parameters())
    dbl, sgl = model.transformer_blocks[0], model.single_transformer_blocks[0]
    dbl_params = sum(p.numel() for p in dbl.parameters())
    sgl_params = sum(p.numel() for p in sgl.parameters())
    D = FLUX_SLICE["num_attention_heads"] * FLUX_SLICE["attention_head_dim"]
    g = torch.Generator().manual_seed(0)
    latents = torch.randn(2, a.tokens, 64, generator=g)
    prompt = torch.randn(2, text, 4096, generator=g)
    pooled = torch.randn(2, 768, generator=g)
    timestep = torch.full((2,), 0.5)
    guidance = torch.full((2,), 3.5)
    rows = torch.arange(side).view(side, 1).expand(side, side).float()
    cols = torch.arange(side).view(1, side).expand(side, side).float()
    img_ids = torch.stack([torch.zeros(side, side), rows, cols], -1).reshape(a.tokens, 3)
    txt_ids = torch.zeros(text, 3)
    calls = calls_of(a.cfg)

    def step():
        for b, e in calls:
            model(hidden_states=latents[b:e].to(dtype), encoder_hidden_states=prompt[b:e].to(dtype),
                  pooled_projections=pooled[b:e].to(dtype), timestep=timestep[b:e].to(dtype), img_ids=img_ids,
                  txt_ids=txt_ids, guidance=guidance[b:e].to(dtype), return_dict=False)

    start_load = loadavg()
    n = calls[0][1] - calls[0][0]
    with torch.inference_mode():
        gflop, ms = measure(a.runs, model, step)
        h = torch.randn(n, a.tokens, D, generator=g).to(dtype)
        c = torch.randn(n, text, D, generator=g).to(dtype)
        temb = torch.randn(n, D, generator=g).to(dtype)
        rope = model.pos_embed(torch.cat([txt_ids, img_ids], 0))
        dbl_gflop, dbl_ms = measure(a.runs, dbl, lambda: dbl(hidden_states=h, encoder_hidden_states=c, temb=temb,
                                                              image_rotary_emb=rope))
        sgl_gflop, sgl_ms = measure(a.runs, sgl, lambda: sgl(hidden_states=h, encoder_hidden_states=c, temb=temb,
                                                              image_rotary_emb=rope))
    print(f"diffusers FLUX.1-dev FluxTransformer2DModel slice (1 double + 1 single block, random weights), {a.tokens} "
          f"image tokens ({16 * side} px) + {text} text tokens, {a.dtype}, cfg {a.cfg} ({len(calls)} call(s) of batch "
          f"{n} per step), {torch.get_num_threads()} threads")
    print(f"params: slice {params / 1e6:.1f} M (double block {dbl_params / 1e6:.1f} M, single block "
          f"{sgl_params / 1e6:.1f} M; built in {build_s:.1f} s, RSS after build {weights_rss:.0f} MB)")
    show("step (slice)", gflop, ms)
    show("double block (one call)", dbl_gflop, dbl_ms)
    show("single block (one call)", sgl_gflop, sgl_ms)
    nd, ns = FLUX_DOUBLE - 1, FLUX_SINGLE - 1
    full_ms = statistics.median(ms) + len(calls) * (nd * statistics.median(dbl_ms) + ns * statistics.median(sgl_ms))
    full_gflop = gflop + len(calls) * (nd * dbl_gflop + ns * sgl_gflop)
    full_params = params + nd * dbl_params + ns * sgl_params
    print(f"extrapolated to {FLUX_DOUBLE} + {FLUX_SINGLE} blocks: {full_ms / 1000.0:.1f} s per step, {full_gflop:.0f} "
          f"GFLOP, {full_gflop / (full_ms / 1000.0):.1f} GFLOP/s, {full_params / 1e9:.2f} B params")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    print(f"load average: {start_load} at start, {loadavg()} at end")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", choices=["sd35m", "flux-slice"], required=True)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--text-tokens", type=int, default=0)
    ap.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--cfg", choices=["batched", "separate", "none"], default=None)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-warmup", action="store_true")
    a = ap.parse_args()
    global WARMUP
    WARMUP = not a.no_warmup
    if a.cfg is None:
        a.cfg = "batched" if a.model == "sd35m" else "none"
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    install_torch2_backfills()
    torch.manual_seed(0)
    dtype = torch.bfloat16 if a.dtype == "bf16" else torch.float32
    (bench_sd35m if a.model == "sd35m" else bench_flux_slice)(a, dtype)
    print(f"OPENBLAS_CORETYPE: {os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
