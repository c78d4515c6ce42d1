"""The pack's web extension in the real editor: after a run each pack node shows what it ran at, SafeVAEDecode its
retry in warning colour, DtypeInspect its table with NaN highlighted (also after the workflow is saved and
reopened), PrecisionPolicy what `auto` resolved to, and a precision error lands on the node that raised it.

Each check reads the node's report view (node.psView(), what the extension draws from) and what the canvas really
drew in a frame (fillText/fillRect calls with their colours)."""
import glob
import json
import os

import pytest

from browser_editor import widget_values
from comfy_client import ROOT

pytestmark = [pytest.mark.browser, pytest.mark.server]

WORKFLOWS = sorted(glob.glob(os.path.join(ROOT, "workflows", "*.json")))
BADGE_FG = {"info": "#dbeafe", "warn": "#fffbeb", "error": "#ffffff", "ok": "#dcfce7"}
TEXT = {"warn": "#fbbf24", "error": "#fca5a5", "ok": "#86efac"}
BAD_CELL = "#991b1b"
# pack nodes that report after a run (the loaders have nothing to show)
PACK_TYPES = ("PrecisionSafePolicy", "PrecisionSafeVAEDecode", "PrecisionSafeDtypeInspect", "PrecisionSafeDetailer")
RESCUE = "Black-image rescue"  # the bundled workflow most checks below run on (once, in the `rescue` fixture)


def _workflow(fragment):
    path = next(p for p in WORKFLOWS if fragment in os.path.basename(p))
    with open(path) as f:
        return json.load(f)


def _texts(view):
    """Every text of a view (badges, lines, table cells) with its kind."""
    out = [(b["text"], b["kind"]) for b in view["badges"]]
    for block in view["blocks"]:
        if block["type"] == "lines":
            out += [(line["text"], line["kind"]) for line in block["lines"]]
        else:
            out += [(cell["text"], cell["kind"]) for row in block["rows"] for cell in row]
    return out


def _field_rows(view):
    """DtypeInspect's table: field name -> the cells of each inspected value."""
    table = next(b for b in view["blocks"] if b["type"] == "table")
    return {row[0]["text"]: row[1:] for row in table["rows"]}


def _drawn_in(drawn, text, color):
    return any(t["text"] == text and t["color"] == color for t in drawn["texts"])


def _records(events):
    return {str(e["detail"]["node"]): e["detail"]["output"]["precision_safe"][0]
            for e in events if e["type"] == "executed" and "precision_safe" in (e["detail"].get("output") or {})}


def _upstream(editor, node_id, input_name):
    return editor.evaluate("""([id, name]) => {
      const node = app.graph.getNodeById(id);
      const link = app.graph.links[node.inputs.find(i => i.name === name).link];
      return link.origin_id;
    }""", [node_id, input_name])


@pytest.fixture(scope="module")
def rescue(editor, screenshots):
    """The Black-image rescue workflow loaded through the UI and run with the Run button's call."""
    editor.load(_workflow(RESCUE), RESCUE)
    editor.free_cache()
    events = editor.queue()
    assert events[-1]["type"] == "execution_success", events[-1]
    editor.fit()
    editor.screenshot(os.path.join(screenshots, "black-image-rescue.png"))
    # the README's picture (docs/editor-badges.png is a copy): both decodes, both inspects, the saved images
    wanted = ("VAEDecode", "PrecisionSafeVAEDecode", "PrecisionSafeDtypeInspect", "ImageScale",
              "PrecisionSafeSaveImage")
    ids = editor.evaluate("(types) => app.graph._nodes.filter(n => types.includes(n.type)).map(n => n.id)", wanted)
    editor.dismiss_dialogs()
    editor.screenshot(os.path.join(screenshots, "editor-badges.png"), clip=editor.frame(ids))
    return events


def test_extension_loads_offline(editor, browser_context, blocked_requests):
    names = editor.evaluate("() => app.extensions.map(e => e.name)")
    assert "precision_safe.Badges" in names
    pack = editor.pack_url  # /extensions/<the folder the pack is installed in>/
    for module in ("precision_safe.js", "common/report_view.js", "common/canvas_draw.js"):
        assert (pack + module, 200) in editor.responses
    # the frontend logs its own 404s (no templates here) and warnings; none may come from this pack's modules
    assert not [e for e in editor.page_errors if pack in e or "precision_safe" in e], \
        editor.page_errors
    # the route handler aborts requests to other hosts (probed from a blank page: the editor's own CSP would
    # stop this one before it reached the route; 192.0.2.1 is TEST-NET-1, never routable)
    probe = browser_context.new_page()
    try:
        outcome = probe.evaluate("() => fetch('http://192.0.2.1/probe').then(() => 'sent', () => 'failed')")
    finally:
        probe.close()
    assert outcome == "failed" and "http://192.0.2.1/probe" in blocked_requests


def _check_reports_on_every_pack_node(editor, workflow, events):
    records = _records(events)
    pack_nodes = [n["id"] for n in workflow["nodes"] if n["type"] in PACK_TYPES]
    assert pack_nodes and {str(i) for i in pack_nodes} <= set(records)
    for nid in pack_nodes:
        view, record = editor.view(nid), records[str(nid)]
        texts = [t for t, _ in _texts(view)]
        assert view["badges"], f"node {nid} shows no badge"
        for role, where in record["ran"].items():  # every dtype/device the node used is on it
            assert any(where in t for t in texts), (nid, role, where, texts)
        for retry in record["retries"]:
            assert (f"↻ retry {retry}", "warn") in _texts(view)
        for cast in record["casts"]:
            assert (f"⇄ cast {cast}", "warn") in _texts(view)


@pytest.mark.parametrize("path", [p for p in WORKFLOWS if RESCUE not in p], ids=lambda p: os.path.basename(p)[:20])
def test_bundled_workflow_shows_reports_on_every_pack_node(editor, screenshots, path):
    with open(path) as f:
        workflow = json.load(f)
    name = os.path.splitext(os.path.basename(path))[0]
    editor.load(workflow, name)
    editor.free_cache()
    events = editor.queue()
    assert events[-1]["type"] == "execution_success", events[-1]
    _check_reports_on_every_pack_node(editor, workflow, events)
    editor.fit()
    editor.screenshot(os.path.join(screenshots, f"{name}.png"))


def test_black_image_rescue_shows_reports_on_every_pack_node(editor, rescue):
    _check_reports_on_every_pack_node(editor, _workflow(RESCUE), rescue)


def test_safe_decode_shows_its_dtype_and_the_retry_in_warning_colour(editor, rescue):
    nid = editor.node_id("PrecisionSafeVAEDecode")
    view = editor.view(nid)
    assert {"text": "vae fp16 · cpu", "kind": "info"} in view["badges"]
    assert {"text": "↻ 1 retry", "kind": "warn"} in view["badges"]
    assert ("↻ retry items [1] fp16 -> bf16: finite", "warn") in _texts(view)
    drawn = editor.drawn(nid)
    assert _drawn_in(drawn, "vae fp16 · cpu", BADGE_FG["info"])
    assert _drawn_in(drawn, "↻ 1 retry", BADGE_FG["warn"])
    assert _drawn_in(drawn, "↻ retry items [1] fp16 -> bf16: finite", TEXT["warn"])


def test_inspect_table_highlights_nan_on_the_core_branch_only(editor, rescue):
    core_decode = editor.node_id("VAEDecode")
    inspects = [n for n in editor.evaluate(
        "() => app.graph._nodes.filter(n => n.type === 'PrecisionSafeDtypeInspect').map(n => n.id)")]
    core = next(i for i in inspects if _upstream(editor, i, "value") == core_decode)
    safe = next(i for i in inspects if i != core)

    view = editor.view(core)
    table = _field_rows(view)
    nan_cell = table["NaN"][0]
    assert nan_cell["kind"] == "bad" and int(nan_cell["text"]) > 0
    assert table["dtype"][0]["text"] == "fp32" and table["device"][0]["text"] == "cpu"
    assert any(b["kind"] == "error" and b["text"].startswith("NaN ") for b in view["badges"])
    drawn = editor.drawn(core)
    assert BAD_CELL in drawn["rects"], "the NaN cell was not highlighted"
    assert _drawn_in(drawn, nan_cell["text"], "#ffffff")

    safe_view = editor.view(safe)
    assert _field_rows(safe_view)["NaN"] == [{"text": "0", "kind": "ok"}]
    assert {"text": "✓ agrees", "kind": "ok"} in safe_view["badges"]


def test_policy_shows_what_auto_resolved_to(editor, rescue):
    nid = editor.node_id("PrecisionSafePolicy")
    view = editor.view(nid)
    table = next(b for b in view["blocks"] if b["type"] == "table")
    rows = {r[0]["text"]: (r[1]["text"], r[3]["text"], r[3]["kind"]) for r in table["rows"]}
    assert set(rows) == {"unet", "vae", "text_encoder", "detector", "sam", "intermediate"}
    assert rows["vae"] == ("fp16", "fp16 · cpu", "info")  # chosen explicitly in this workflow
    # the server runs with --cpu: auto is ComfyUI's choice there (fp32, but fp16 for a text encoder: no CLIP is
    # connected, so its default for one), and the pack's fp32 default for detector / SAM
    for role in ("unet", "detector", "sam", "intermediate"):
        assert rows[role] == ("auto", "fp32 · cpu", "ok"), role
    assert rows["text_encoder"] == ("auto", "fp16 · cpu", "ok")
    badge = "auto → unet fp32, te fp16, detector fp32, sam fp32, inter fp32"
    assert {"text": badge, "kind": "info"} in view["badges"]
    drawn = editor.drawn(nid)
    assert _drawn_in(drawn, badge, BADGE_FG["info"])
    assert _drawn_in(drawn, "fp32 · cpu", TEXT["ok"])


def test_inspect_report_is_restored_when_the_saved_workflow_is_reopened(editor, rescue, screenshots):
    saved_prompt = editor.evaluate("async () => JSON.stringify(await app.graphToPrompt())")
    saved = json.dumps(json.loads(saved_prompt)["workflow"])
    # the report widget is not serialised: widget values and the API prompt are what the node definitions say
    assert widget_values(json.loads(saved)) == widget_values(_workflow(RESCUE))
    assert "precision_safe_report" not in json.dumps(json.loads(saved_prompt)["output"])
    before = {i: editor.view(i) for i in editor.evaluate(
        "() => app.graph._nodes.filter(n => n.type === 'PrecisionSafeDtypeInspect').map(n => n.id)")}
    editor.page.reload()
    editor.open()
    editor.load(json.loads(saved), "reopened")
    for nid, old in before.items():
        view = editor.view(nid)
        old_table = next(b for b in old["blocks"] if b["type"] == "table")
        assert next(b for b in view["blocks"] if b["type"] == "table") == old_table
        assert view["badges"] == old["badges"]
        assert ("last run (saved with the workflow)", "muted") in _texts(view)
    core = next(i for i, v in before.items() if any(b["kind"] == "error" for b in v["badges"]))
    assert BAD_CELL in editor.drawn(core)["rects"]
    editor.fit()
    editor.screenshot(os.path.join(screenshots, "reopened.png"))


_BUILD_MISMATCH_GRAPH = """async (mode) => {
  await app.loadGraphData({ last_node_id: 0, last_link_id: 0, nodes: [], links: [], groups: [], config: {},
                            extra: {}, version: 0.4 }, true, true, "mismatch " + mode);
  const add = (type, x, y, values = {}) => {
    const node = LiteGraph.createNode(type);
    node.pos = [x, y];
    app.graph.add(node);
    for (const [name, value] of Object.entries(values)) node.widgets.find(w => w.name === name).value = value;
    return node;
  };
  const ckpt = add("CheckpointLoaderSimple", 40, 40, { ckpt_name: "tiny_sd15.safetensors" });
  const empty = add("EmptyLatentImage", 40, 220, { width: 16, height: 16, batch_size: 1 });
  const cast = add("PSTest_CastLatent", 380, 220, { dtype: "bf16" });
  const policy = add("PrecisionSafePolicy", 380, 340, { on_mismatch: mode });
  const decode = add("PrecisionSafeVAEDecode", 760, 120);
  const preview = add("PreviewImage", 1200, 120);
  empty.connect(0, cast, 0);
  cast.connect(0, decode, 0);
  ckpt.connect(2, decode, 1);
  policy.connect(0, decode, 2);
  decode.connect(0, preview, 0);
  return decode.id;
}"""


def test_precision_error_is_shown_on_the_node_that_raised_it(editor, screenshots):
    decode = editor.evaluate(_BUILD_MISMATCH_GRAPH, "error")
    events = editor.queue()
    error = events[-1]
    assert error["type"] == "execution_error" and str(error["detail"]["node_id"]) == str(decode)
    view = editor.view(decode)
    assert view["badges"][0] == {"text": "✖ precision error", "kind": "error"}
    texts = _texts(view)
    problem = " ".join(t for t, k in texts if k == "error")
    fix = " ".join(t for t, k in texts if k == "warn")
    assert f"Safe VAE Decode #{decode}, input 'samples'" in problem and "got bf16" in problem
    assert fix.startswith("Fix: ") and "on_mismatch" in fix
    # the frontend's own error display carries the pack's message too
    assert f"Safe VAE Decode #{decode}" in editor.shown_text(f"Safe VAE Decode #{decode}")
    editor.dismiss_dialogs()
    drawn = editor.drawn(decode)
    assert _drawn_in(drawn, "✖ precision error", BADGE_FG["error"])
    assert any(t["color"] == TEXT["error"] and t["text"].startswith(f"✖ Safe VAE Decode #{decode}")
               for t in drawn["texts"])
    editor.screenshot(os.path.join(screenshots, "precision-error.png"))
    width_with_error = editor.evaluate("(id) => app.graph.getNodeById(id).size[0]", decode)

    # the same graph in cast mode: the error is gone, the cast shows in warning colour
    editor.evaluate("""(id) => { const p = app.graph._nodes.find(n => n.type === 'PrecisionSafePolicy');
                                 p.widgets.find(w => w.name === 'on_mismatch').value = 'cast'; }""", decode)
    events = editor.queue()
    assert events[-1]["type"] == "execution_success", events[-1]
    view = editor.view(decode)
    assert not any(k == "error" for _, k in _texts(view))
    assert {"text": "⇄ 1 cast", "kind": "warn"} in view["badges"]
    assert ("⇄ cast samples: bf16 -> fp32", "warn") in _texts(view)
    editor.drawn(decode)
    assert editor.evaluate("(id) => app.graph.getNodeById(id).size[0]", decode) < width_with_error  # shrank back
    editor.screenshot(os.path.join(screenshots, "cast-mode.png"))


def test_dtype_error_on_a_core_node_gets_a_hint(editor):
    """SaveImage/PreviewImage turn IMAGE into numpy, which has no bf16: the node gets a hint, not just a trace."""
    preview = editor.evaluate("""async () => {
      await app.loadGraphData({ last_node_id: 0, last_link_id: 0, nodes: [], links: [], groups: [], config: {},
                                extra: {}, version: 0.4 }, true, true, "bf16 image");
      const add = (type, x, values = {}) => { const n = LiteGraph.createNode(type); n.pos = [x, 60]; app.graph.add(n);
        for (const [k, v] of Object.entries(values)) n.widgets.find(w => w.name === k).value = v; return n; };
      const image = add("EmptyImage", 40, { width: 16, height: 16, batch_size: 1 });
      const cast = add("PSTest_CastImage", 380, { dtype: "bf16" });
      const preview = add("PreviewImage", 720);
      image.connect(0, cast, 0);
      cast.connect(0, preview, 0);
      return preview.id;
    }""")
    events = editor.queue()
    assert events[-1]["type"] == "execution_error" and str(events[-1]["detail"]["node_id"]) == str(preview)
    editor.dismiss_dialogs()
    view = editor.view(preview)
    assert view["badges"][0] == {"text": "✖ dtype error", "kind": "error"}
    assert any(t.startswith("Hint: looks like a dtype mismatch") for t, _ in _texts(view))


DETAILER_RECORD = {
    "node": "Detailer #30", "context_source": "context input",
    "ran": {"detector": "fp32 · cpu", "sam": "fp32 · cpu", "unet": "fp32 · cpu", "vae": "fp16 · cpu"},
    "casts": ["image: bf16 -> fp32"], "retries": ["region 2 decode fp16 -> bf16: finite"],
    "warnings": ["region 3 skipped: empty mask"], "notes": ["3 regions"], "seconds": 1.5,
}


def test_detailer_record_shows_like_safe_decode(editor):
    """The Detailer (PrecisionSafeDetailer) sends the same record: roles as badges, retries/casts/warnings in
    warning colour. Fed through the node's real onExecuted when the type is registered, else through the view."""
    result = editor.evaluate("""async ([record, pack]) => {
      const { buildView } = await import(pack + "common/report_view.js");
      const pure = buildView("PrecisionSafeDetailer", { record }, { live: true });
      if (!LiteGraph.registered_node_types["PrecisionSafeDetailer"]) return { pure, node: null };
      const node = LiteGraph.createNode("PrecisionSafeDetailer");
      node.pos = [0, 0];
      app.graph.add(node);
      node.onExecuted({ text: ["..."], precision_safe: [record] });
      return { pure, node: node.psView(), id: node.id };
    }""", [DETAILER_RECORD, editor.pack_url])
    for view in filter(None, (result["pure"], result["node"])):
        assert {"text": "4 roles · cpu", "kind": "info"} in view["badges"]  # more than 2 roles: a table
        table = next(b for b in view["blocks"] if b["type"] == "table")
        assert {r[0]["text"]: r[1]["text"] for r in table["rows"]} == DETAILER_RECORD["ran"]
        assert {"text": "↻ 1 retry", "kind": "warn"} in view["badges"]
        assert {"text": "⇄ 1 cast", "kind": "warn"} in view["badges"]
        texts = _texts(view)
        assert ("↻ retry region 2 decode fp16 -> bf16: finite", "warn") in texts
        assert ("⇄ cast image: bf16 -> fp32", "warn") in texts
        assert ("⚠ region 3 skipped: empty mask", "warn") in texts
    if result["node"]:
        assert _drawn_in(editor.drawn(result["id"]), "↻ retry region 2 decode fp16 -> bf16: finite", TEXT["warn"])
        # the report is a widget of its own, last and below the multiline prompt box: no overlap
        widgets = editor.evaluate("""(id) => app.graph.getNodeById(id).widgets.map(w => ({
          name: w.name, y: w.y, h: w.computedHeight }))""", result["id"])
        report = widgets[-1]
        assert report["name"] == "precision_safe_report" and report["h"] > 60
        assert all(w["y"] + w["h"] <= report["y"] + 0.5 for w in widgets[:-1]), widgets
