"""Safe loading of ultralytics .pt files: allow-list, refusal without execution, path checks, no downloads."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from precision_safe.nodes.detect import safe_load, yolo
from precision_safe.nodes.detect.safe_load import ModelFileError, ModelFileNotFound, UnsafeModelFile

MODELS = Path(__file__).resolve().parents[1] / "assets" / "models"
BBOX = MODELS / "ultralytics" / "bbox" / "tiny_shapes_bbox.pt"
SEG = MODELS / "ultralytics" / "segm" / "tiny_shapes_seg.pt"


class RunsShell:
    """Unpickling this runs `touch marker`: the classic malicious-.pt payload."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


def test_unsafe_zip_checkpoint_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "bad.pt"
    torch.save({"model": RunsShell(marker), "w": torch.ones(2)}, bad)

    with pytest.raises(UnsafeModelFile) as err:
        safe_load.load_yolo(bad)
    msg = str(err.value)
    assert f"{os.system.__module__}.system" in msg and "NOT loaded" in msg and "bad.pt" in msg
    assert not marker.exists()

    # the payload is real: an ordinary torch.load runs it (so the assertion above is meaningful)
    torch.load(bad, weights_only=False)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_unsafe_legacy_pickle_refused_without_running_it(tmp_path, protocol):
    """A raw pickle (not torch's zip format) can't be pre-scanned; the restricted unpickler must stop it."""
    marker = tmp_path / "pwned"
    bad = tmp_path / "legacy.pt"
    with open(bad, "wb") as f:
        pickle.dump({"model": RunsShell(marker)}, f, protocol=protocol)
    if protocol == 2:  # torch's own legacy format: the unpickler reaches the global and names it
        with pytest.raises(UnsafeModelFile, match=rf"NOT loaded: it references {os.system.__module__}\.system"):
            safe_load.load_yolo(bad)
    else:  # newer opcodes are refused even before that
        with pytest.raises(ModelFileError, match="could not be read"):
            safe_load.load_yolo(bad)
    assert not marker.exists()


def test_allow_list_is_narrow(tmp_path):
    """An ordinary torch layer that no detect/segment checkpoint uses is refused too, and named."""
    f = tmp_path / "linear.pt"
    torch.save({"model": torch.nn.Linear(2, 2)}, f)
    with pytest.raises(UnsafeModelFile, match=r"torch\.nn\.modules\.linear\.Linear"):
        safe_load.load_yolo(f)


def test_not_a_model_is_a_clear_error(tmp_path):
    f = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.ones(1)}}, f)
    with pytest.raises(ModelFileError, match="no ultralytics detection"):
        safe_load.load_yolo(f)


def test_committed_models_load_without_ultralytics_unrestricted_loader(monkeypatch):
    import ultralytics.nn.tasks as tasks
    import ultralytics.utils.patches as patches

    def forbidden(*a, **k):
        raise AssertionError("ultralytics' unrestricted loader was used")

    monkeypatch.setattr(tasks, "torch_safe_load", forbidden)
    monkeypatch.setattr(tasks, "torch_load", forbidden, raising=False)
    monkeypatch.setattr(patches, "torch_load", forbidden)
    det, seg = safe_load.load_yolo(BBOX), safe_load.load_yolo(SEG)
    assert det.task == "detect" and seg.task == "segment"
    assert det.names == {0: "square", 1: "circle"} == seg.names
    assert next(det.model.parameters()).dtype == torch.float32


@pytest.mark.parametrize("cfg", ["yolov8n-seg.yaml", "yolo11n.yaml", "yolo26n-seg.yaml"])
def test_allow_list_covers_ultralytics_architectures(tmp_path, cfg):
    """Checkpoints of the v8 / 11 / 26 families (saved the way ultralytics saves them) load and run."""
    from ultralytics import YOLO

    f = tmp_path / cfg.replace(".yaml", ".pt")
    YOLO(cfg).save(f)
    model = safe_load.load_yolo(f)
    assert model.task == ("segment" if "seg" in cfg else "detect")
    out = yolo.detect(model, torch.rand(1, 64, 96, 3), dtype=torch.float32, device=torch.device("cpu"),
                      conf=0.5, imgsz=64)
    assert out[0].boxes.shape[1] == 4


# ---------------------------------------------------------------------------------------------- paths


@pytest.fixture
def model_dir(tmp_path):
    root = tmp_path / "models" / "bbox"
    (root / "sub").mkdir(parents=True)
    (root / "a.pt").write_bytes(b"x")
    (root / "sub" / "b.pt").write_bytes(b"x")
    (tmp_path / "outside.pt").write_bytes(b"x")
    return root


def test_resolve_inside_folder(model_dir):
    assert safe_load.resolve_model_path("a.pt", model_dir) == model_dir / "a.pt"
    assert safe_load.resolve_model_path("sub/b.pt", [model_dir]) == model_dir / "sub" / "b.pt"
    assert safe_load.resolve_model_path("sub/../a.pt", [model_dir]).resolve() == (model_dir / "a.pt").resolve()
    os.symlink(model_dir / "sub" / "b.pt", model_dir / "link.pt")  # symlink staying inside: fine
    assert safe_load.resolve_model_path("link.pt", model_dir).resolve() == (model_dir / "sub" / "b.pt").resolve()


@pytest.mark.parametrize("name", ["../../outside.pt", "sub/../../../outside.pt", "..", "/etc/passwd",
                                  "C:/x.pt", "..\\outside.pt"])
def test_escaping_names_refused(model_dir, name):
    with pytest.raises(ModelFileError) as err:
        safe_load.resolve_model_path(name, model_dir)
    assert not isinstance(err.value, ModelFileNotFound)  # refused as an escape, not reported as missing


def test_symlink_a_user_placed_in_the_folder_is_followed_wherever_it_points(model_dir, tmp_path):
    """Issue 11 #7: people symlink model files from another disk into ComfyUI's folders; ComfyUI follows them."""
    os.symlink(tmp_path / "outside.pt", model_dir / "shared.pt")
    os.symlink(tmp_path, model_dir / "linked_dir")
    assert safe_load.resolve_model_path("shared.pt", model_dir).resolve() == (tmp_path / "outside.pt").resolve()
    assert safe_load.resolve_model_path("linked_dir/outside.pt", model_dir).is_file()
    committed = model_dir / "tiny.pt"
    os.symlink(BBOX, committed)
    assert safe_load.load_yolo(safe_load.resolve_model_path("tiny.pt", model_dir)).task == "detect"


# ------------------------------------------------------------------------------------- broken files (issue 11 #3)

def _broken(tmp_path, kind) -> Path:
    f = tmp_path / f"{kind}.pt"
    data = {
        "empty": b"",
        "random": bytes(range(256)) * 20,
        "text": b"<html>404 Not Found</html>",
        "truncated": BBOX.read_bytes()[: BBOX.stat().st_size // 2],
        "corrupt_zip": BBOX.read_bytes()[:100] + bytes(5000) + BBOX.read_bytes()[5100:],
        "plain_pickle": pickle.dumps({"weights": [1, 2, 3]}, protocol=4),
    }[kind]
    f.write_bytes(data)
    return f


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("kind,expected", [
    ("empty", "is empty (0 bytes)"),
    ("random", "is not a checkpoint"),
    ("text", "is not a checkpoint"),
    ("truncated", "is truncated or damaged"),
    ("corrupt_zip", "damaged or not a checkpoint"),
    ("plain_pickle", "a plain Python pickle, not a torch.save checkpoint"),
])
@pytest.mark.parametrize("loader", ["yolo", "sam"])
def test_broken_files_say_what_is_wrong_and_never_advise_an_unsafe_load(tmp_path, kind, expected, loader):
    from precision_safe.nodes.detect.sam import load_sam
    f = _broken(tmp_path, kind)
    with pytest.raises(ModelFileError) as err:
        (safe_load.load_yolo if loader == "yolo" else load_sam)(f)
    msg = str(err.value)
    assert f.name in msg and expected in msg and "re-download" in msg, msg
    assert "weights_only" not in msg and "will likely succeed" not in msg, msg


@pytest.fixture
def net_attempts(monkeypatch):
    """Records (and blocks) DNS look-ups and non-loopback connects: ultralytics may swallow a failed download,
    so the shared conftest guard's exception alone could go unnoticed."""
    import socket

    attempts = []
    connect, getaddrinfo = socket.socket.connect, socket.getaddrinfo

    def guarded_connect(self, address, *a):
        host = address[0] if isinstance(address, tuple) else "local"
        if host not in ("local", "localhost", "::1") and not str(host).startswith("127."):
            attempts.append(address)
            raise OSError("network blocked by test")
        return connect(self, address, *a)

    def guarded_getaddrinfo(host, *a, **k):
        if host not in ("localhost", "::1") and not str(host).startswith("127."):
            attempts.append(host)
            raise OSError("DNS blocked by test")
        return getaddrinfo(host, *a, **k)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return attempts


def test_missing_file_clear_error_and_no_download(model_dir, net_attempts):
    with pytest.raises(ModelFileNotFound) as err:
        safe_load.resolve_model_path("yolov8n.pt", [model_dir, model_dir / "sub"])
    msg = str(err.value)
    assert "'yolov8n.pt' not found" in msg and str(model_dir.resolve()) in msg and "Nothing was downloaded" in msg
    assert isinstance(err.value, FileNotFoundError)
    with pytest.raises(ModelFileNotFound):
        safe_load.load_yolo(model_dir / "yolov8n.pt")  # an official asset name: ultralytics would fetch it
    assert net_attempts == []
