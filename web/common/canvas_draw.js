// Canvas drawing of a report view (see report_view.js): a badge row for LGraphNode.drawBadges and the body
// blocks drawn from onDrawForeground. No frontend imports.

export const COLORS = {
  text: { info: "#dbe4f0", muted: "#94a3b8", ok: "#86efac", warn: "#fbbf24", error: "#fca5a5", bad: "#ffffff" },
  badgeBg: { info: "#1e3a5f", muted: "#334155", ok: "#166534", warn: "#b45309", error: "#b91c1c", bad: "#b91c1c" },
  badgeFg: { info: "#dbeafe", muted: "#e2e8f0", ok: "#dcfce7", warn: "#fffbeb", error: "#ffffff", bad: "#ffffff" },
  badCell: "#991b1b",
  panel: "rgba(0,0,0,0.22)",
};

const BADGE = { fontSize: 11, padding: 5, height: 18, gap: 3, radius: 4 };
const LINE = { font: "12px sans-serif", height: 16 };
const TABLE = { font: "11px monospace", bold: "bold 11px monospace", height: 15, cellPad: 7 };
const PAD = 8;
const WRAP_MIN = 380; // wrapped messages (errors) make the node at least this wide

// One entry of node.badges. The frontend's LGraphBadge class is not exported to extensions in 1.32.9, and
// drawBadges() only needs {height, getWidth(ctx), draw(ctx, x, y)} from what a badge function returns, so the
// pack's badges travel as one row object. text/fgColor/bgColor mirror LGraphBadge's fields for other renderers.
export class BadgeRow {
  constructor(getBadges) {
    this.getBadges = getBadges;
    this.height = BADGE.height;
    this.fgColor = COLORS.badgeFg.info;
    this.bgColor = COLORS.badgeBg.info;
  }

  get badges() {
    return this.getBadges() ?? [];
  }

  get text() {
    return this.badges.map((b) => b.text).join("  ");
  }

  get visible() {
    return this.badges.length > 0;
  }

  #widths(ctx) {
    const font = ctx.font;
    ctx.font = `${BADGE.fontSize}px sans-serif`;
    const widths = this.badges.map((b) => ctx.measureText(b.text).width + 2 * BADGE.padding);
    ctx.font = font;
    return widths;
  }

  getWidth(ctx) {
    const widths = this.#widths(ctx);
    return widths.reduce((s, w) => s + w, 0) + Math.max(0, widths.length - 1) * BADGE.gap;
  }

  draw(ctx, x, y) {
    const badges = this.badges;
    if (!badges.length) return;
    const widths = this.#widths(ctx);
    const saved = { font: ctx.font, fillStyle: ctx.fillStyle, textBaseline: ctx.textBaseline, textAlign: ctx.textAlign };
    ctx.font = `${BADGE.fontSize}px sans-serif`;
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    badges.forEach((b, i) => {
      ctx.fillStyle = COLORS.badgeBg[b.kind] ?? COLORS.badgeBg.info;
      ctx.beginPath();
      if (ctx.roundRect) ctx.roundRect(x, y, widths[i], BADGE.height, BADGE.radius);
      else ctx.rect(x, y, widths[i], BADGE.height);
      ctx.fill();
      ctx.fillStyle = COLORS.badgeFg[b.kind] ?? COLORS.badgeFg.info;
      ctx.fillText(b.text, x + BADGE.padding, y + BADGE.height / 2 + 1);
      x += widths[i] + BADGE.gap;
    });
    Object.assign(ctx, saved);
  }
}

function wrapText(ctx, text, width) {
  const words = String(text).split(/\s+/);
  const out = [];
  let line = "";
  for (const word of words) {
    const next = line ? `${line} ${word}` : word;
    if (line && ctx.measureText(next).width > width) {
      out.push(line);
      line = word;
    } else line = next;
  }
  if (line) out.push(line);
  return out;
}

// Sizes every block for a body `width` wide; returns {width, height, blocks} with per-block geometry.
export function layoutView(ctx, view, width) {
  const font = ctx.font;
  let height = 0;
  let needWidth = 0;
  const blocks = [];
  for (const block of view.blocks) {
    if (block.type === "lines") {
      ctx.font = LINE.font;
      const lines = [];
      for (const line of block.lines) {
        // Lines wrap to the node's width instead of widening it (nodes sit close to their neighbours); only
        // messages marked `wrap` (errors) ask for a minimum width so they stay readable.
        let wrapWidth = Math.max(width - 2 * PAD, 120);
        if (line.wrap) {
          wrapWidth = Math.max(wrapWidth, WRAP_MIN);
          needWidth = Math.max(needWidth, wrapWidth + 2 * PAD);
        }
        for (const part of wrapText(ctx, line.text, wrapWidth)) lines.push({ ...line, text: part });
      }
      blocks.push({ type: "lines", lines, y: height });
      height += lines.length * LINE.height + 4;
    } else {
      ctx.font = TABLE.bold;
      const cols = block.columns.map((c) => ctx.measureText(c).width);
      ctx.font = TABLE.font;
      for (const row of block.rows) row.forEach((cell, i) => { cols[i] = Math.max(cols[i] ?? 0, ctx.measureText(cell.text).width); });
      const widths = cols.map((w) => w + TABLE.cellPad);
      needWidth = Math.max(needWidth, widths.reduce((s, w) => s + w, 0) + 2 * PAD);
      blocks.push({ type: "table", block, widths, y: height });
      height += (block.rows.length + 1) * TABLE.height + 6;
    }
  }
  ctx.font = font;
  return { width: Math.ceil(needWidth), height: Math.ceil(height), blocks };
}

// Draws a laid-out view with its top-left corner at (x, y), `width` wide.
export function drawLayout(ctx, layout, x, y, width) {
  const saved = { font: ctx.font, fillStyle: ctx.fillStyle, textBaseline: ctx.textBaseline, textAlign: ctx.textAlign };
  ctx.textBaseline = "middle";
  ctx.textAlign = "left";
  ctx.fillStyle = COLORS.panel;
  ctx.beginPath();
  if (ctx.roundRect) ctx.roundRect(x + 4, y - 2, width - 8, layout.height + 2, 4);
  else ctx.rect(x + 4, y - 2, width - 8, layout.height + 2);
  ctx.fill();
  for (const b of layout.blocks) {
    const top = y + b.y;
    if (b.type === "lines") {
      ctx.font = LINE.font;
      b.lines.forEach((line, i) => {
        ctx.fillStyle = COLORS.text[line.kind] ?? COLORS.text.info;
        ctx.fillText(line.text, x + PAD, top + i * LINE.height + LINE.height / 2);
      });
    } else {
      const { block, widths } = b;
      let cx = x + PAD;
      ctx.font = TABLE.bold;
      ctx.fillStyle = COLORS.text.muted;
      block.columns.forEach((c, i) => { ctx.fillText(c, cx, top + TABLE.height / 2); cx += widths[i]; });
      ctx.font = TABLE.font;
      block.rows.forEach((row, r) => {
        const cy = top + (r + 1) * TABLE.height;
        cx = x + PAD;
        row.forEach((cell, i) => {
          if (cell.kind === "bad") {
            ctx.fillStyle = COLORS.badCell;
            ctx.fillRect(cx - 3, cy + 1, widths[i] - 2, TABLE.height - 2);
            ctx.font = TABLE.bold;
          }
          ctx.fillStyle = COLORS.text[cell.kind] ?? COLORS.text.info;
          ctx.fillText(cell.text, cx, cy + TABLE.height / 2);
          ctx.font = TABLE.font;
          cx += widths[i];
        });
      });
    }
  }
  Object.assign(ctx, saved);
}
