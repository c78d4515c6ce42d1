"""Trusting a detector file on purpose: by sha256, with the extra globals listed for it, still through torch's
restricted unpickler; and allowed classes never constructed with arguments from a file.

The "third-party" checkpoint is the committed tiny detector saved again the way older ultralytics versions pickled
their models (tests/support/third_party_models.py)."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from precision_safe.nodes.detect import safe_load, trust, yolo
from precision_safe.nodes.detect.safe_load import UnsafeModelFile
from precision_safe.nodes.detect.trust import TrustConfig, TrustConfigError
from third_party_models import BBOX, EXTRA, save_legacy_style


@pytest.fixture(scope="module")
def third_party(tmp_path_factory) -> tuple[Path, list[str]]:
    """The file and the globals it names beyond the allow-list (EXTRA, less numpy.dtype once ComfyUI, loaded by
    other tests in this process, has allowed that process-wide)."""
    path = tmp_path_factory.mktemp("third_party") / "face_yolov8m.pt"
    return path, save_legacy_style(path)


def config(tmp_path, entries) -> TrustConfig:
    path = tmp_path / "trusted_models.json"
    path.write_text(json.dumps({"trusted": entries}))
    return TrustConfig.read(path)


def sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def test_untrusted_third_party_file_is_refused_naming_classes_and_how_to_trust_exactly_it(third_party, tmp_path):
    third_party, extra = third_party
    cfg = TrustConfig.read(tmp_path / "none.json")  # no config file: nothing trusted
    with pytest.raises(UnsafeModelFile) as err:
        safe_load.load_yolo(third_party, cfg)
    msg = str(err.value)
    assert "face_yolov8m.pt was NOT loaded" in msg and "Nothing in the file was run" in msg
    assert all(name in msg for name in extra)
    snippet = json.loads(msg[msg.index('{"sha256"'):msg.index("}", msg.index('{"sha256"')) + 1])
    assert snippet == {"sha256": sha(third_party), "file": "face_yolov8m.pt", "allow": extra}
    assert str(cfg.path) in msg and "weights_only" not in msg


def test_trusted_file_loads_through_the_restricted_unpickler_and_detects(third_party, tmp_path):
    third_party, _ = third_party
    cfg = config(tmp_path, [{"sha256": sha(third_party), "file": "face_yolov8m.pt", "allow": EXTRA}])
    model = safe_load.load_yolo(third_party, cfg)
    from ultralytics.nn.modules.conv import Conv
    assert any(type(m) is Conv for m in model.model.modules())  # the legacy name rebuilt the current class
    image = torch.full((1, 128, 128, 3), 0.3)
    image[0, 30:70, 40:80] = torch.tensor([0.9, 0.2, 0.2])
    found = yolo.detect(model, image, dtype=torch.float32, device=torch.device("cpu"), conf=0.5, imgsz=128)[0]
    reference = yolo.detect(safe_load.load_yolo(BBOX), image, dtype=torch.float32, device=torch.device("cpu"),
                            conf=0.5, imgsz=128)[0]
    assert len(found) == 1 and torch.equal(found.boxes, reference.boxes)


def test_trust_is_for_those_bytes_and_those_globals_only(third_party, tmp_path):
    third_party, _ = third_party
    changed = tmp_path / "face_yolov8m.pt"
    changed.write_bytes(third_party.read_bytes() + b"\0")  # same name, other bytes (a zip still reads)
    entry = {"sha256": sha(third_party), "file": "face_yolov8m.pt", "allow": EXTRA}
    with pytest.raises(UnsafeModelFile, match="If you trust this exact file"):
        safe_load.load_yolo(changed, config(tmp_path, [entry]))
    short = {**entry, "allow": [n for n in EXTRA if n != "builtins.getattr"]}
    with pytest.raises(UnsafeModelFile, match=r"that entry's \"allow\" lacks builtins\.getattr"):
        safe_load.load_yolo(third_party, config(tmp_path, [short]))


@pytest.mark.parametrize("name", ["os.system", "builtins.eval", "dill._dill._load_type", "subprocess.Popen",
                                  "ultralytics.engine.model.Model", "ultralytics.nn.autobackend.AutoBackend",
                                  "torch.load", "ultralytics.nn.modules.NoSuchLayer"])
def test_a_config_cannot_allow_what_could_run_code(tmp_path, name):
    with pytest.raises(TrustConfigError, match=f"allows {name}.*never allowed"):
        config(tmp_path, [{"sha256": "0" * 64, "allow": [name]}])


def test_refusal_of_a_file_that_can_never_be_trusted_says_so(tmp_path):
    class Payload:
        def __reduce__(self):
            return os.system, ("true",)

    f = tmp_path / "evil.pt"
    torch.save({"model": Payload()}, f)
    with pytest.raises(UnsafeModelFile, match="never allowed, even for a trusted file") as err:
        safe_load.load_yolo(f, TrustConfig.read(tmp_path / "none.json"))
    assert '{"sha256"' not in str(err.value)  # no snippet that would invite trusting it


@pytest.mark.parametrize("text,expected", [
    ("not json", "could not be read"), ('{"files": []}', "must be"),
    ('{"trusted": [{"sha256": "abc", "allow": []}]}', "64 hex digits"),
])
def test_malformed_config_is_a_clear_error(tmp_path, text, expected):
    path = tmp_path / "trusted_models.json"
    path.write_text(text)
    with pytest.raises(TrustConfigError, match=expected) as err:
        TrustConfig.read(path)
    assert str(path) in str(err.value)


def test_trusted_getattr_fetches_only_forward(tmp_path):
    class Reach:
        def __reduce__(self):
            from ultralytics.nn.modules.head import Detect
            return getattr, (Detect, "__init__")

    f = tmp_path / "reach.pt"
    torch.save({"x": Reach()}, f)
    cfg = config(tmp_path, [{"sha256": sha(f), "allow": ["builtins.getattr", "ultralytics.nn.modules.head.Detect"]}])
    with pytest.raises(safe_load.ModelFileError):
        safe_load.safe_torch_load(f, trusted=cfg)


class Constructed:
    """Pickles as a call of an allowed class with arguments: DetectionModel(cfg=<url>) would fetch that url."""

    def __reduce__(self):
        from ultralytics.nn.tasks import DetectionModel
        return DetectionModel, ("https://example.invalid/yolov8n.yaml",)


def test_allowed_classes_are_never_constructed_with_arguments_from_the_file(tmp_path, monkeypatch):
    import ultralytics.nn.tasks as tasks
    calls = []
    monkeypatch.setattr(tasks, "yaml_model_load", lambda *a, **k: calls.append(a) or {})
    f = tmp_path / "constructs.pt"
    torch.save({"model": Constructed()}, f)
    out = safe_load.safe_torch_load(f)  # only allow-listed globals: loads, but as an empty object
    assert calls == [] and type(out["model"]) is tasks.DetectionModel and not out["model"].__dict__
    assert trust.rebuilt_blank(tasks.DetectionModel)
