"""Re-queuing a Detailer with another seed encodes nothing again: the crops' latents of an earlier encode of the same
pixels are reused (through ComfyUI's real executor, on the tiny checkpoint), and the result is the one a fresh
encode gives."""
import os

import numpy as np
import torch
from comfy_execution.graph_utils import GraphBuilder
from PIL import Image

from graphs import detailer
from comfy_client import CHECKPOINT

SQUARES = ((10, 10), (80, 12), (12, 84), (86, 86))


def _image(name: str, changed: bool = False) -> str:
    import folder_paths
    rng = np.random.default_rng(20)
    img = 0.3 + rng.normal(0, 0.05, (128, 128, 3))  # noise no other test's crops share
    for (x, y), colour in zip(SQUARES, ((0.9, 0.1, 0.1), (0.1, 0.9, 0.1), (0.1, 0.1, 0.9), (0.9, 0.9, 0.1))):
        img[y:y + 24, x:x + 24] = colour
    if changed:
        img[90, 90] = 0.0  # one pixel inside the fourth square
    path = os.path.join(folder_paths.get_input_directory(), name)
    Image.fromarray((np.clip(img, 0, 1) * 255).round().astype(np.uint8)).save(path)
    return name


def _run(comfy, name, seed, **over):
    g = GraphBuilder()
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name=CHECKPOINT)
    d = detailer(g, g.node("LoadImage", image=name).out(0), ckpt, sam=False, **{"steps": 1, "seed": seed, **over})
    g.node("PreviewImage", images=d.out(0))
    r = comfy.run(g.finalize())
    assert r.success, r.error
    report = comfy.output(d.id, 4).splitlines()
    return comfy.output(d.id, 0), [int(line.split("#")[1].split()[0]) for line in report if "earlier encode" in line]


def test_a_new_seed_reuses_the_latents_and_gives_what_a_fresh_encode_gives(comfy):
    kept = comfy.pack_module("nodes.detailer.reuse")._KEPT
    name = _image("ps_reuse_squares.png")
    kept.clear()
    fresh5, reused = _run(comfy, name, seed=5)
    assert reused == []  # nothing encoded before
    kept.clear()
    fresh6, _ = _run(comfy, name, seed=6)
    again5, reused = _run(comfy, name, seed=5)  # the crops of the seed-6 run, the same pixels
    assert reused == [0, 1, 2, 3], reused
    assert torch.equal(again5, fresh5) and not torch.equal(fresh5, fresh6)


def test_a_changed_pixel_or_setting_is_encoded_again(comfy):
    name, changed = _image("ps_reuse_base.png"), _image("ps_reuse_changed.png", changed=True)
    _run(comfy, name, seed=1)
    _, reused = _run(comfy, changed, seed=2)
    assert reused == [0, 1, 2], reused  # the fourth crop has one pixel changed
    _, reused = _run(comfy, name, seed=3, tiled_vae="encode", tile_size=64)  # another encode: nothing reused
    assert reused == []
    _, reused = _run(comfy, name, seed=4, max_size=56)  # another sampling size: nothing reused
    assert reused == []


def test_the_kept_crops_stay_within_their_byte_budget_oldest_dropped_first(comfy, monkeypatch):
    reuse = comfy.pack_module("nodes.detailer.reuse")
    sampling = comfy.pack_module("nodes.detailer.sampling")
    monkeypatch.setattr(reuse, "KEPT_BYTES", 3 * 16 * 16 * 3 * 4)  # three 16x16 fp32 crops
    kept = reuse._Kept()
    crops = [torch.full((16, 16, 3), float(i)) for i in range(4)]
    for i, c in enumerate(crops):
        kept.keep(i, c, None, sampling.Encoded(torch.full((1, 4, 2, 2), float(i))))
    assert kept.find(0, crops[0], None) is None  # the oldest went when the fourth came
    assert all(kept.find(i, crops[i], None).latent[0, 0, 0, 0] == i for i in (1, 2, 3))
    assert kept.find(1, crops[2], None) is None  # another crop under the key: never its latent
    kept.keep(4, torch.zeros(64, 64, 3), None, sampling.Encoded(torch.zeros(1, 4, 8, 8)))  # over the budget alone
    assert kept.find(4, torch.zeros(64, 64, 3), None) is None and kept.find(3, crops[3], None) is not None
