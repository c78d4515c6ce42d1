"""What the editor sees of the pack's nodes (/object_info): stable prefixed ids, a category, a description, and a
tooltip on every input."""
EXPECTED = {"PrecisionSafePolicy", "PrecisionSafeVAEDecode", "PrecisionSafeDtypeInspect",
            "PrecisionSafeDetectorLoader", "PrecisionSafeSAMLoader", "PrecisionSafeDetailer", "PrecisionSafeGuard",
            "PrecisionSafeSaveImage", "PrecisionSafeDetailerDetectionOptions", "PrecisionSafeDetailerSamOptions",
            "PrecisionSafeDetectSEGS",
            # inserted by PrecisionPolicy's enforce_downstream, never by hand (category "precision safe/internal")
            "PrecisionSafeConform"}


def test_every_pack_node_is_documented(server):
    info = server.object_info()
    ours = {k: v for k, v in info.items() if k.startswith("PrecisionSafe")}
    assert set(ours) == EXPECTED
    for node_id, node in ours.items():
        assert node["category"].startswith("precision safe"), node_id
        assert len(node["description"]) > 40, node_id
        for section in ("required", "optional"):
            for name, spec in node["input"].get(section, {}).items():
                opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
                assert opts.get("tooltip"), f"{node_id}.{name} has no tooltip"


def test_segs_edges_are_impact_packs_type(server):
    """The Detailer's and Detect SEGS' SEGS connect to Impact Pack's nodes: the same type name on the graph."""
    info = server.object_info()
    assert info["PrecisionSafeDetailer"]["input"]["optional"]["segs"][0] == "SEGS"
    assert info["PrecisionSafeDetailer"]["output"][5] == "SEGS" and info["PrecisionSafeDetectSEGS"]["output"][0] == "SEGS"


def test_model_lists_come_from_the_model_folders(server):
    info = server.object_info()
    detectors = info["PrecisionSafeDetectorLoader"]["input"]["required"]["model_name"]
    names = detectors[0] if isinstance(detectors[0], list) else detectors[1]["options"]
    assert "bbox/tiny_shapes_bbox.pt" in names and "segm/tiny_shapes_seg.pt" in names
