"""A thin driver for the ComfyUI editor page: load a workflow, queue it, wait for the end of the run, read a node's
report view and what the canvas really drew for it, take screenshots. Everything goes through the page's own
objects (window.app, the frontend's api) via page.evaluate, as a user's extension would see them."""
from __future__ import annotations

import time

EXTENSION = "precision_safe.Badges"
TERMINAL = ("execution_success", "execution_error", "execution_interrupted")

_INSTALL_EVENT_LOG = """() => {
  if (window.__ps) return;
  const api = window.comfyAPI.api.api;
  window.__ps = { events: [] };
  for (const type of ["execution_start", "executed", "execution_cached", "execution_success", "execution_error",
                      "execution_interrupted"]) {
    api.addEventListener(type, (e) => window.__ps.events.push({ type, detail: e.detail }));
  }
}"""

# Centers the node at zoom 1, redraws the canvas synchronously, and records every fillText (text + colour) and
# fillRect colour of that frame.
_DRAWN = """(id) => {
  const node = app.graph.getNodeById(id);
  const canvas = app.canvas;
  canvas.ds.scale = 1;
  canvas.centerOnNode(node);
  const proto = CanvasRenderingContext2D.prototype;
  const fillText = proto.fillText, fillRect = proto.fillRect;
  const texts = [], rects = [];
  proto.fillText = function (text, ...rest) { texts.push({ text: String(text), color: String(this.fillStyle) });
                                              return fillText.call(this, text, ...rest); };
  proto.fillRect = function (...args) { rects.push(String(this.fillStyle)); return fillRect.apply(this, args); };
  try { canvas.draw(true, true); } finally { proto.fillText = fillText; proto.fillRect = fillRect; }
  return { texts, rects };
}"""


def widget_values(workflow: dict) -> dict:
    """Node id -> the widget values a UI-format workflow holds; [] for a node without widgets (frontend 1.32
    saves [], 1.49 null)."""
    return {n["id"]: n.get("widgets_values") or [] for n in workflow["nodes"]}


class Editor:
    def __init__(self, page, server, page_errors):
        self.page, self.server, self.page_errors = page, server, page_errors
        # where the server serves the pack's web folder: /extensions/<the folder the pack is installed in>/
        main = next(u for u in server.get("/extensions") if u.endswith("/precision_safe.js"))
        self.pack_url = main[:-len("precision_safe.js")]

    def open(self, timeout=90):
        """Load the editor and wait until it is ready for a test's own workflow: the pack's extension registered
        and the frontend's start-up workflow (the default one, or the tab restored after a reload) open. Frontend
        1.49 opens it a moment after the graph exists; a workflow loaded before that would be switched away."""
        self.page.goto(self.server.url)
        self.page.wait_for_function(
            f"() => window.app?.graph && window.app.extensions?.some(e => e.name === '{EXTENSION}')"
            " && window.app.extensionManager?.workflow?.activeWorkflow", timeout=timeout * 1000)
        self.page.evaluate(_INSTALL_EVENT_LOG)

    def evaluate(self, js, arg=None):
        return self.page.evaluate(js, arg)

    def load(self, workflow: dict, name="workflow"):
        self.page.evaluate("async ([wf, name]) => { await app.loadGraphData(wf, true, true, name); }", [workflow, name])

    def free_cache(self):
        """Drop the server's cached outputs, so the next run executes every node: a cached node that is not an
        output node sends no `executed` message, hence no report (the report it showed before stays in
        node.properties, but a freshly loaded workflow has none)."""
        status, _ = self.server.post("/free", {"free_memory": True})
        assert status == 200
        time.sleep(1.0)  # the prompt worker wakes on the flag and resets its executor

    def queue(self, timeout=120) -> list[dict]:
        """Queue the graph as the Run button does; returns the run's events once it ended."""
        self.page.evaluate("() => { window.__ps.events = []; }")
        self.page.evaluate("async () => { await app.queuePrompt(0); }")
        self.page.wait_for_function(
            f"() => window.__ps.events.some(e => {list(TERMINAL)!r}.includes(e.type))", timeout=timeout * 1000)
        time.sleep(0.2)  # let the frontend's own listeners finish with the last message
        return self.page.evaluate("() => window.__ps.events")

    def node_id(self, type_, title=None) -> int:
        ids = self.page.evaluate(
            "([type, title]) => app.graph._nodes.filter(n => n.type === type && (!title || n.title === title))"
            ".map(n => n.id)", [type_, title])
        assert len(ids) == 1, f"{len(ids)} nodes of type {type_} titled {title}"
        return ids[0]

    def view(self, node_id) -> dict:
        return self.page.evaluate("(id) => app.graph.getNodeById(id).psView()", node_id)

    def drawn(self, node_id) -> dict:
        return self.page.evaluate(_DRAWN, node_id)

    def shown_text(self, fragment, timeout=10) -> str:
        """The text of the first visible page element (not the canvas) that shows `fragment`, once one does. Where
        the frontend shows only a summary with a details button (1.49's error toast), that button is clicked, as a
        user would to read the message."""
        shown = self.page.get_by_text(fragment).first
        details = self.page.get_by_role("button", name="details")
        deadline = time.time() + timeout
        while not shown.is_visible():
            if time.time() > deadline:
                raise TimeoutError(f"no page element shows {fragment!r} after {timeout} s")
            if details.count() and details.first.is_visible():
                details.first.click()
            self.page.wait_for_timeout(200)
        return shown.inner_text()

    def dismiss_dialogs(self):
        """Close the frontend's dialogs and toasts (they cover the canvas in screenshots)."""
        for _ in range(3):
            for close in self.page.locator(".p-toast-close-button").all():
                close.click()
            if not self.page.locator(".p-dialog").count():
                return
            self.page.keyboard.press("Escape")
            self.page.wait_for_timeout(200)

    def fit(self, scale=None):
        """Whole graph in view (optionally at a fixed zoom, centred)."""
        self.page.evaluate("""(scale) => {
          const c = app.canvas;
          const nodes = app.graph._nodes;
          const x0 = Math.min(...nodes.map(n => n.pos[0])), y0 = Math.min(...nodes.map(n => n.pos[1] - 60));
          const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])), y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1]));
          const [w, h] = [c.canvas.width / devicePixelRatio, c.canvas.height / devicePixelRatio];
          const s = scale ?? Math.min(w / (x1 - x0 + 80), h / (y1 - y0 + 80), 1.2);
          c.ds.scale = s;
          c.ds.offset[0] = (w / s - (x1 - x0)) / 2 - x0;
          c.ds.offset[1] = (h / s - (y1 - y0)) / 2 - y0;
          c.setDirty(true, true);
          c.draw(true, true);
        }""", scale)
        self.page.wait_for_timeout(300)

    def frame(self, node_ids, left=70, top=110, scale=1.0, margin=20):
        """Zoom to `scale` with the given nodes' box (badges included) at (left, top) of the page; returns that
        box in page pixels, for a clipped screenshot."""
        box = self.page.evaluate("""([ids, left, top, scale, margin]) => {
          const c = app.canvas;
          const nodes = ids.map(id => app.graph.getNodeById(id));
          const x0 = Math.min(...nodes.map(n => n.pos[0])) - margin;
          const y0 = Math.min(...nodes.map(n => n.pos[1])) - 60;
          const x1 = Math.max(...nodes.map(n => n.pos[0] + n.size[0])) + margin;
          const y1 = Math.max(...nodes.map(n => n.pos[1] + n.size[1])) + margin;
          c.ds.scale = scale;
          c.ds.offset[0] = left / scale - x0;
          c.ds.offset[1] = top / scale - y0;
          c.setDirty(true, true);
          c.draw(true, true);
          const r = c.canvas.getBoundingClientRect();
          return { x: r.left + left, y: r.top + top, width: (x1 - x0) * scale, height: (y1 - y0) * scale };
        }""", [list(node_ids), left, top, scale, margin])
        self.page.wait_for_timeout(300)
        return box

    def screenshot(self, path, **kw):
        self.page.screenshot(path=path, **kw)
        return path
