// precision safe: shows on each pack node what it ran at (badges above the title, details in the body), the
// DtypeInspect table, what PrecisionPolicy's `auto` resolved to, and a precision error on the node that raised it.
//
// The record comes in the ui payload's `precision_safe` entry (nodes/host/records.py) through onExecuted and
// is kept in node.properties.precision_safe, so it is saved with the workflow and shown again when it is
// reopened (marked "last run"). Errors are transient: cleared when the next run starts.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import { BadgeRow, drawLayout, layoutView } from "./common/canvas_draw.js";
import { buildView, errorView, POLICY_ROLES } from "./common/report_view.js";

const EXT = "precision_safe.Badges";
const PROP = "precision_safe";
const PACK_PREFIX = "PrecisionSafe";

// Wraps obj[name] so the previous handler (the frontend's or another extension's) runs first.
function chainAfter(obj, name, fn) {
  const prev = obj[name];
  obj[name] = function (...args) {
    const result = prev?.apply(this, args);
    fn.apply(this, args);
    return result;
  };
}

function nodeClass(node) {
  return node.comfyClass ?? node.type ?? "";
}

function viewOf(node) {
  return buildView(nodeClass(node), node.properties?.[PROP], { live: Boolean(node._psLive), error: node._psError });
}

function redraw(node) {
  node.setDirtyCanvas?.(true, true);
  app.graph?.setDirtyCanvas?.(true, true);
}

// One canvas for measuring text outside a draw call (a widget's computeSize gets no context).
let measureCtx = null;
function measuring() {
  measureCtx ??= document.createElement("canvas").getContext("2d");
  return measureCtx;
}

// The size the node would have without its report: its current one, unless the report grew it (and the user
// has not resized it since).
function baseSize(node) {
  const auto = node._psAutoSize;
  const userSized = !auto || node.size[0] !== auto[0] || node.size[1] !== auto[1];
  return userSized ? [node.size[0], node.size[1]] : node._psBaseSize;
}

// The report laid out for the node's width; null when there is nothing to show.
function reportLayout(node) {
  const view = viewOf(node);
  return view.blocks.length ? layoutView(measuring(), view, baseSize(node)[0]) : null;
}

// Grows the node to fit its report; shrinks it back (never below its base size) when the report gets smaller.
// Runs from onDrawForeground, before the frontend arranges the widgets for the frame.
function fitNode(node) {
  if (node.flags?.collapsed) return;
  const layout = reportLayout(node);
  if (!layout && !node._psAutoSize) return;
  const base = baseSize(node);
  const target = [Math.max(base[0], layout?.width ?? 0), Math.max(base[1], node.computeSize()[1])];
  if (target[0] === node.size[0] && target[1] === node.size[1]) return;
  node._psBaseSize = base;
  node.setSize(target);
  node._psAutoSize = [node.size[0], node.size[1]];
  redraw(node);
}

// The report is drawn by a widget of its own, after the node's widgets: the frontend's layout then keeps its
// height free (multiline text and other DOM widgets only get the space left). Not serialised: it holds no value,
// so widgets_values and the API prompt stay as the node definition says.
const WIDGET = "precision_safe_report";

function addReportWidget(node) {
  if (node._psWidget || !node.addCustomWidget) return;
  node._psWidget = node.addCustomWidget({
    type: WIDGET,
    name: WIDGET,
    value: null,
    serialize: false,
    options: { serialize: false },
    computeSize(width) {
      const layout = reportLayout(node);
      return [width ?? node.size[0], layout ? layout.height + 4 : 0];
    },
    draw(ctx, _node, width, y) {
      if (app.canvas?.low_quality) return;
      const layout = reportLayout(node);
      if (layout) drawLayout(ctx, layout, 0, y + 2, node.size[0]);
    },
  });
}

function removeReportWidget(node) {
  if (!node._psWidget) return;
  if (node.widgets?.includes(node._psWidget)) node.removeWidget(node._psWidget);
  node._psWidget = null;
}

// Sizing hook + badge row + report widget on one node object or prototype (the hook once per object).
function installSizing(target) {
  if (Object.prototype.hasOwnProperty.call(target, "_psSizing")) return;
  target._psSizing = true;
  chainAfter(target, "onDrawForeground", function () {
    fitNode(this);
  });
}

function addBadgeRow(node) {
  if (node._psBadgeRow) return;
  node._psBadgeRow = new BadgeRow(() => viewOf(node).badges);
  if (!Array.isArray(node.badges)) node.badges = [];
  node.badges.push(() => node._psBadgeRow);
}

function policyChoices(node) {
  const choices = {};
  for (const role of POLICY_ROLES) {
    const widget = node.widgets?.find((w) => w.name === `${role}_dtype`);
    if (widget) choices[role] = widget.value;
  }
  return choices;
}

function* allNodes(graph, seen = new Set()) {
  if (!graph || seen.has(graph)) return;
  seen.add(graph);
  for (const node of graph._nodes ?? graph.nodes ?? []) {
    yield node;
    if (node.subgraph) yield* allNodes(node.subgraph, seen);
  }
}

function rootGraph() {
  return app.graph?.rootGraph ?? app.graph; // the root even while a subgraph is open
}

// "12" or, inside subgraphs, "3:7:12" (the ids of the subgraph nodes on the way).
function nodeByExecutionId(id) {
  let graph = rootGraph();
  let node = null;
  for (const part of String(id).split(":")) {
    node = graph?.getNodeById?.(part) ?? graph?.getNodeById?.(Number(part)) ?? null;
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

app.registerExtension({
  name: EXT,

  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith(PACK_PREFIX)) return;
    const proto = nodeType.prototype;

    chainAfter(proto, "onNodeCreated", function () {
      addBadgeRow(this);
      addReportWidget(this);
    });

    chainAfter(proto, "onExecuted", function (output) {
      const record = output?.[PROP]?.[0];
      if (!record) return;
      const stored = { record };
      if (nodeData.name === "PrecisionSafePolicy") stored.choices = policyChoices(this);
      this.properties ??= {};
      this.properties[PROP] = stored;
      this._psLive = true;
      this._psError = null;
      redraw(this);
    });

    chainAfter(proto, "onConfigure", function () {
      this._psLive = false; // what properties hold now comes from the saved workflow
    });

    installSizing(proto);
    proto.psView = function () {
      return viewOf(this);
    };
  },

  setup() {
    api.addEventListener("execution_start", () => {
      for (const node of allNodes(rootGraph())) {
        if (!node._psError) continue;
        node._psError = null;
        if (!nodeClass(node).startsWith(PACK_PREFIX)) removeReportWidget(node); // it only carried the error
        redraw(node);
      }
    });

    api.addEventListener("execution_error", ({ detail }) => {
      const node = detail?.node_id != null ? nodeByExecutionId(detail.node_id) : null;
      if (!node) return;
      const error = { message: detail.exception_message ?? "", type: detail.exception_type ?? "" };
      const packNode = nodeClass(node).startsWith(PACK_PREFIX);
      // Another pack's or a core node: shown (with a hint) only when the message looks like a dtype problem.
      if (!packNode && !errorView(error, false)) return;
      node._psError = error;
      if (!packNode) {
        installSizing(node);
        addBadgeRow(node);
        addReportWidget(node);
        node.psView ??= () => viewOf(node);
      }
      redraw(node);
    });
  },
});
