"""Cost of explain_dtype_errors when nothing fails: a small fp32 conv decoder run with and without it.

Interleaved (the order flips every round) so drift in CPU clocks hits both sides alike; prints medians, their
ratio and the median of per-round paired ratios (robust when
other processes share the CPU; goal: <= 1.01, i.e. within noise) and the bare enter/exit cost of the context manager.
    OMP_NUM_THREADS=2 .host/venv/bin/python scripts/bench/bench_diagnose.py [rounds]
"""
import importlib.util
import os
import statistics
import sys
import time
import timeit

import torch
import torch.nn as nn

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# import the pack under a unique name, as tests/conftest.py does (its `nodes/` folder must not shadow ComfyUI's)
spec = importlib.util.spec_from_file_location("precision_safe", os.path.join(ROOT, "__init__.py"),
                                              submodule_search_locations=[ROOT])
sys.modules["precision_safe"] = pack = importlib.util.module_from_spec(spec)
spec.loader.exec_module(pack)
from precision_safe.nodes.precision.diagnose import explain_dtype_errors  # noqa: E402


class Res(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = nn.GroupNorm(8, c)
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return x + self.conv2(torch.nn.functional.silu(self.conv1(self.norm(x))))


def decoder(c=24):
    """Latent 4ch -> RGB at 4x, VAE-decoder shaped (convs, group norms, residual blocks, upsampling)."""
    return nn.Sequential(nn.Conv2d(4, c, 3, padding=1), Res(c), nn.Upsample(scale_factor=2), Res(c),
                         nn.Upsample(scale_factor=2), Res(c), nn.Conv2d(c, 3, 3, padding=1))


def main(rounds=200):
    torch.manual_seed(0)
    vae, z = decoder().eval(), torch.randn(1, 4, 16, 16)

    def plain():
        return vae(z)

    def wrapped():
        with explain_dtype_errors(node="SafeVAEDecode", modules={"vae": vae}, inputs={"samples": z},
                                  roles={"vae": "vae"}):
            return vae(z)

    with torch.inference_mode():
        for _ in range(20):  # warm-up: allocator, oneDNN primitive caches
            plain(), wrapped()
        times = {plain: [], wrapped: []}
        for i in range(rounds):
            for fn in ((plain, wrapped) if i % 2 else (wrapped, plain)):
                t0 = time.perf_counter()
                fn()
                times[fn].append(time.perf_counter() - t0)
    p, w = statistics.median(times[plain]), statistics.median(times[wrapped])
    paired = statistics.median(b / a for a, b in zip(times[plain], times[wrapped]))
    n = 100_000
    bare = min(timeit.repeat("with cm(node='N', modules=m, inputs=i, roles=r): pass", number=n, repeat=5,
                             globals={"cm": explain_dtype_errors, "m": {"vae": vae}, "i": {"samples": z},
                                      "r": {"vae": "vae"}}))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {rounds} interleaved rounds, "
          f"decoder 1x4x16x16 -> 1x3x64x64 fp32")
    print(f"median plain   {p * 1e3:.3f} ms")
    print(f"median wrapped {w * 1e3:.3f} ms")
    print(f"ratio of medians wrapped/plain {w / p:.4f}; median paired ratio {paired:.4f}")
    print(f"bare context manager enter+exit: {bare / n * 1e6:.2f} us ({bare / n / p * 100:.4f} % of a forward)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
