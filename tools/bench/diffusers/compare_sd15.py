"""Tessera against diffusers 0.40 on the SD1.5 workloads of issue 11, in one session, interleaved (T D T D …),
printed as a markdown table of medians and ratios (Tessera / diffusers: < 1 means Tessera is faster or smaller).

Both sides use the same Debian LibTorch 1.13, the same thread count and the same OpenBLAS core (Tessera picks its
own with select_blas_core and prints it on its "BLAS:" line; diffusers gets that core through OPENBLAS_CORETYPE).
Every run is a fresh process under /usr/bin/time -v (peak RSS); the figure is what the benchmark prints (median
forward / decode), or the process wall time for whole runs.

Needs ../shared/bench/diffusers set up once (its README: setup.sh, then env.sh is sourced here); exits with 77
("skipped") when that environment is missing, so it can sit in scripts that also run where no diffusers exists.

  /usr/bin/python3 tools/bench/diffusers/compare_sd15.py --build build --threads 2 --repeats 2 \\
      [--only unet256,unet512,vae,unet512-bf16,vae-bf16,sd15-256,sd15-256-auto] [--model /tmp/sd15-random]
      [--log /tmp/cmp.log]

`sd15-256` / `sd15-256-auto` (the whole 256², 4-step CFG run; `-auto` with Tessera's `--dtype auto`) need a random full-size SD1.5 folder:
  build/tools/bench/tessera_make_random_sd15 /tmp/sd15-random
"""
import argparse
import os
import re
import shlex
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
SHARED = os.environ.get("TESSERA_SHARED_BENCH", os.path.join(REPO, "..", "shared", "bench", "diffusers"))


def diffusers_env():
    """The environment env.sh sets up, or None when the diffusers bench environment is absent."""
    env_sh = os.path.join(SHARED, "env.sh")
    if not os.path.isfile(env_sh):
        return None
    out = subprocess.run(["bash", "-c", f". {shlex.quote(env_sh)} && env -0"], capture_output=True, check=True).stdout
    env = dict(kv.split("=", 1) for kv in out.decode().split("\0") if "=" in kv)
    probe = subprocess.run(["/usr/bin/python3", "-c", "import diffusers, torch"], env=env, capture_output=True)
    return env if probe.returncode == 0 else None


def timed_run(cmd, env, log):
    """Runs cmd under /usr/bin/time -v; returns (stdout+stderr, wall s, peak RSS MB)."""
    tfile = "/tmp/tessera-compare-time.txt"
    load = open("/proc/loadavg").read().split()[0]
    t0 = time.time()
    p = subprocess.run(["/usr/bin/time", "-v", "-o", tfile] + cmd, env=env, capture_output=True, text=True)
    wall = time.time() - t0
    out = p.stdout + p.stderr
    rss = 0.0
    for line in open(tfile):
        if "Maximum resident set size" in line:
            rss = int(line.split(":")[1]) / 1024.0
    with open(log, "a") as f:
        f.write(f"=== {time.strftime('%FT%TZ', time.gmtime())} load {load} rc {p.returncode}\n$ {shlex.join(cmd)}\n{out}\n")
    if p.returncode != 0:
        raise SystemExit(f"failed ({p.returncode}): {shlex.join(cmd)}\n{out[-2000:]}")
    return out, wall, rss


def grab(pattern, text, scale=1.0):
    m = re.search(pattern, text)
    if not m:
        raise SystemExit(f"no match for /{pattern}/ in:\n{text[-2000:]}")
    return float(m.group(1)) * scale


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(REPO, "build"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", default="unet256,unet512,vae")
    ap.add_argument("--model", default="/tmp/sd15-random")
    ap.add_argument("--attention", default="auto", help="Tessera's --attention")
    ap.add_argument("--log", default="/tmp/tessera-compare-sd15.log")
    a = ap.parse_args()
    denv = diffusers_env()
    if denv is None:
        print(f"skipped: no diffusers bench environment at {SHARED} (see its README)")
        return 77
    b = os.path.join(a.build, "tools")
    th = str(a.threads)
    tenv = dict(os.environ)
    # The OpenBLAS core Tessera selects, for diffusers too.
    probe, _, _ = timed_run([f"{b}/bench/tessera_bench_vae", "--latent", "8", "--threads", th], tenv, a.log)
    m = re.search(r"OPENBLAS_CORETYPE=(\w+)", probe)
    if m:
        denv["OPENBLAS_CORETYPE"] = m.group(1)
    core = denv.get("OPENBLAS_CORETYPE", "as detected")
    att = ["--attention", a.attention]
    ms = r"median ([0-9.]+) ms"
    py = "/usr/bin/python3"

    def tessera_sd15(extra):
        return ([f"{b}/cli/tessera", "-q", "--threads", th] + att +
                ["run", os.path.join(REPO, "recipes/sd/auto.yaml")] + extra +
                ["--set", f"model={a.model}", "--set", "prompt=a photograph of an astronaut riding a horse",
                 "--set", "height=256", "--set", "width=256", "--set", "num_inference_steps=4", "--set",
                 "guidance_scale=7.5", "--set", "seed=42", "--out", "/tmp/tessera-compare-sd15.png"])

    diffusers_sd15 = [py, f"{SHARED}/cli_sd.py", a.model, "/tmp/diffusers-compare-sd15.png", th, "4", "256"]
    workloads = {
        # name: (description, tessera cmd, tessera figure regex/scale, diffusers cmd or None, diffusers regex/scale)
        "unet256": ("UNet forward, batch 2, 32×32 latent (256²) fp32",
                    [f"{b}/bench/tessera_bench_unet", "--size", "32", "--runs", "3", "--threads", th] + att, (r"forward: " + ms, 1e-3),
                    [py, f"{SHARED}/bench_sd15_unet.py", "--threads", th, "--sizes", "32", "--reps", "3"], (r"wall s ([0-9.]+)", 1)),
        "unet512": ("UNet forward, batch 2, 64×64 latent (512²) fp32",
                    [f"{b}/bench/tessera_bench_unet", "--size", "64", "--runs", "2", "--threads", th] + att, (r"forward: " + ms, 1e-3),
                    [py, f"{SHARED}/bench_sd15_unet.py", "--threads", th, "--sizes", "64", "--reps", "2"], (r"wall s ([0-9.]+)", 1)),
        "unet512-bf16": ("UNet 512², Tessera bf16 vs diffusers fp32",
                         [f"{b}/bench/tessera_bench_unet", "--size", "64", "--runs", "2", "--threads", th, "--dtype", "bf16"] + att,
                         (r"forward: " + ms, 1e-3),
                         [py, f"{SHARED}/bench_sd15_unet.py", "--threads", th, "--sizes", "64", "--reps", "2"], (r"wall s ([0-9.]+)", 1)),
        "vae": ("VAE decode [1,4,64,64] → 512² fp32",
                [f"{b}/bench/tessera_bench_vae", "--latent", "64", "--runs", "2", "--threads", th] + att, (r"decode: " + ms, 1e-3),
                [py, f"{SHARED}/bench_sd15_vae.py", "--threads", th, "--reps", "2"], (r"wall s ([0-9.]+)", 1)),
        "vae-bf16": ("VAE decode 512², Tessera bf16 vs diffusers fp32",
                     [f"{b}/bench/tessera_bench_vae", "--latent", "64", "--runs", "2", "--threads", th, "--dtype", "bf16"] + att,
                     (r"decode: " + ms, 1e-3),
                     [py, f"{SHARED}/bench_sd15_vae.py", "--threads", th, "--reps", "2"], (r"wall s ([0-9.]+)", 1)),
        "sd15-256": ("text2image 256², 4 Euler steps, CFG 7.5, whole process (wall)", tessera_sd15([]), None,
                     diffusers_sd15, None),
        "sd15-256-auto": ("text2image 256², 4 Euler steps, CFG 7.5, whole process (wall), Tessera --dtype auto vs diffusers fp32",
                          tessera_sd15(["--dtype", "auto"]), None, diffusers_sd15, None),
    }
    rows = []
    for name in a.only.split(","):
        desc, tcmd, tfig, dcmd, dfig = workloads[name]
        t_vals, t_rss, d_vals, d_rss = [], [], [], []
        for _ in range(a.repeats):
            out, wall, rss = timed_run(tcmd, tenv, a.log)
            t_vals.append(grab(tfig[0], out, tfig[1]) if tfig else wall)
            t_rss.append(rss)
            out, wall, rss = timed_run(dcmd, denv, a.log)
            d_vals.append(grab(dfig[0], out, dfig[1]) if dfig else wall)
            d_rss.append(rss)
        t, d = statistics.median(t_vals), statistics.median(d_vals)
        tr, dr = statistics.median(t_rss), statistics.median(d_rss)
        rows.append(f"| {desc} | {t:.2f} s, {tr / 1024:.2f} GB | {d:.2f} s, {dr / 1024:.2f} GB | **{t / d:.2f}** | {tr / dr:.2f} |")
        print(rows[-1], flush=True)
    print(f"\n{a.threads} threads, OpenBLAS core {core}, Tessera --attention {a.attention}, {a.repeats} interleaved "
          f"repeats (medians; peak RSS of the whole process); log: {a.log}")
    print("| workload | Tessera | diffusers 0.40 | time ratio | RSS ratio |\n|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
