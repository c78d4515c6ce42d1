// What a pack node shows after a run, as plain data: badges above the title and blocks (lines, tables) in the
// body. Pure functions of the node's record (the ui payload's `precision_safe` entry, see
// nodes/host/records.py); no frontend imports, so the drawing code and the tests read the same model.
//
// kinds: "info" (neutral), "muted", "ok", "warn" (casts, retries, warnings, mismatches), "error", "bad" (a
// NaN/Inf cell).

export const POLICY_ROLES = ["unet", "vae", "text_encoder", "detector", "sam", "intermediate"];

const ROLE_SHORT = { text_encoder: "te", intermediate: "inter" };

export function fmtNumber(v) {
  if (v === undefined || v === null) return "";
  if (typeof v !== "number") return String(v);
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(2);
  return String(Number(v.toPrecision(4)));
}

function fmtShape(shape) {
  return Array.isArray(shape) ? `[${shape.join(",")}]` : shape ?? "";
}

function pieces(record) {
  const list = (key) => (Array.isArray(record?.[key]) ? record[key] : []);
  return { casts: list("casts"), retries: list("retries"), warnings: list("warnings"), notes: list("notes") };
}

// Lines for casts/retries/warnings (warning colour) and notes; shared by every pack node.
function eventLines(record) {
  const { casts, retries, warnings, notes } = pieces(record);
  return [
    ...retries.map((r) => ({ text: `↻ retry ${r}`, kind: "warn" })),
    ...casts.map((c) => ({ text: `⇄ cast ${c}`, kind: "warn" })),
    ...warnings.map((w) => ({ text: `⚠ ${w}`, kind: "warn" })),
    ...notes.map((n) => ({ text: n, kind: "muted" })),
  ];
}

function eventBadges(record) {
  const { casts, retries, warnings } = pieces(record);
  const out = [];
  if (retries.length) out.push({ text: `↻ ${retries.length} retr${retries.length === 1 ? "y" : "ies"}`, kind: "warn" });
  if (casts.length) out.push({ text: `⇄ ${casts.length} cast${casts.length === 1 ? "" : "s"}`, kind: "warn" });
  if (warnings.length) out.push({ text: `⚠ ${warnings.length}`, kind: "warn" });
  return out;
}

function footer(record, live) {
  const bits = [];
  if (record?.context_source) bits.push(`context: ${record.context_source}`);
  if (typeof record?.seconds === "number") bits.push(`${(record.seconds * 1000).toFixed(1)} ms`);
  const lines = bits.length ? [{ text: bits.join(" · "), kind: "muted" }] : [];
  if (!live) lines.push({ text: "last run (saved with the workflow)", kind: "muted" });
  return lines;
}

// SafeVAEDecode, the Detailer and any other pack node: what each role ran at, retries/casts in warning colour.
// Up to BADGE_ROLES roles get a badge each ("vae bf16 · cpu"); a node with more (the Detailer: detector, SAM,
// UNet, VAE) gets one summary badge and a role table in its body, so the badge row stays about node-wide.
const BADGE_ROLES = 2;

function deviceOf(where) {
  const parts = String(where).split(" · ");
  return parts.length > 1 ? parts[parts.length - 1] : "";
}

function genericView(record, live) {
  const ran = Object.entries(record?.ran ?? {});
  const blocks = [];
  let badges;
  if (ran.length <= BADGE_ROLES) {
    badges = ran.map(([role, where]) => ({ text: `${role} ${where}`, kind: "info" }));
  } else {
    const devices = [...new Set(ran.map(([, where]) => deviceOf(where)).filter(Boolean))];
    badges = [{ text: `${ran.length} roles${devices.length ? ` · ${devices.join(", ")}` : ""}`, kind: "info" }];
    blocks.push({
      type: "table", columns: ["role", "ran at"],
      rows: ran.map(([role, where]) => [{ text: role, kind: "muted" }, { text: where, kind: "info" }]),
    });
  }
  badges.push(...eventBadges(record));
  const lines = eventLines(record);
  if (lines.length) blocks.push({ type: "lines", lines });
  blocks.push({ type: "lines", lines: footer(record, live) });
  return { badges, blocks };
}

// PrecisionPolicy: what each role resolved to on this machine; `choices` are the widget values of that run.
function policyView(record, choices, live) {
  const ran = record?.ran ?? {};
  const roles = POLICY_ROLES.filter((r) => r in ran).concat(Object.keys(ran).filter((r) => !POLICY_ROLES.includes(r)));
  const rows = roles.map((role) => {
    const choice = choices?.[role];
    const isAuto = !choice || choice === "auto";
    return [
      { text: role, kind: "info" },
      { text: choice ?? "?", kind: "muted" },
      { text: "→", kind: "muted" },
      { text: ran[role], kind: isAuto ? "ok" : "info" },
    ];
  });
  const autoRoles = roles.filter((r) => !choices?.[r] || choices[r] === "auto");
  const resolved = [...new Set(autoRoles.map((r) => ran[r]))];
  const badges = [];
  if (resolved.length === 1) badges.push({ text: `auto → ${resolved[0]}`, kind: "info" });
  else if (resolved.length > 1) {
    badges.push({ text: `auto → ${autoRoles.map((r) => `${ROLE_SHORT[r] ?? r} ${String(ran[r]).split(" ")[0]}`).join(", ")}`, kind: "info" });
  }
  const fixed = roles.filter((r) => !autoRoles.includes(r));
  if (fixed.length) badges.push({ text: fixed.map((r) => `${ROLE_SHORT[r] ?? r} ${ran[r]}`).join(", "), kind: "info" });
  const blocks = [
    { type: "lines", lines: [{ text: "resolved on this machine:", kind: "muted" }] },
    { type: "table", columns: ["role", "choice", "", "runs at"], rows },
  ];
  const lines = eventLines(record);
  if (lines.length) blocks.push({ type: "lines", lines });
  blocks.push({ type: "lines", lines: footer(record, live) });
  return { badges, blocks };
}

// DtypeInspect: a table of what flows through the edge, one column per value (a LATENT and its noise mask, each
// conditioning and its pooled output), one row per field; NaN/Inf cells highlighted. Narrow on purpose: it sits
// in the node's body, beside its neighbours. Fields no value has are left out (a MODEL has no shape or stats).
export const INSPECT_FIELDS = ["dtype", "device", "shape", "NaN", "Inf", "min", "max", "mean"];

function inspectCell(row, field) {
  const count = (v) => ({ text: v === undefined ? "" : String(v), kind: v ? "bad" : v === 0 ? "ok" : "muted" });
  switch (field) {
    case "dtype": {
      let dtype = row.dtype ?? row.compute ?? row.storage ?? "";
      if (row.dtype === undefined && row.storage && row.compute && row.storage !== row.compute) {
        dtype = `${row.compute} (stored ${row.storage})`;
      }
      return { text: dtype, kind: "info" };
    }
    case "device": return { text: row.device ?? "", kind: "info" };
    case "shape": return { text: fmtShape(row.shape), kind: "info" };
    case "NaN": return count(row.nan);
    case "Inf": return count(row.inf);
    default: return { text: fmtNumber(row[field]), kind: "info" };
  }
}

function inspectTable(rows) {
  const fields = INSPECT_FIELDS.filter((f) => rows.some((r) => inspectCell(r, f).text !== ""));
  return {
    type: "table",
    columns: ["", ...rows.map((r) => r.label ?? "")],
    rows: fields.map((f) => [{ text: f, kind: "muted" }, ...rows.map((r) => inspectCell(r, f))]),
  };
}

function inspectView(record, live) {
  const rows = Array.isArray(record?.inspect) ? record.inspect : [];
  const flags = Array.isArray(record?.flags) ? record.flags : [];
  const nonfinite = rows.filter((r) => r.nan || r.inf);
  const badges = [];
  const first = rows[0];
  if (first) {
    const dtype = first.dtype ?? first.compute ?? first.storage ?? "?";
    badges.push({ text: `${first.kind ?? first.label} ${dtype}${first.device ? ` · ${first.device}` : ""}`, kind: "info" });
  }
  if (nonfinite.length) {
    const nan = nonfinite.reduce((s, r) => s + (r.nan || 0), 0);
    const inf = nonfinite.reduce((s, r) => s + (r.inf || 0), 0);
    badges.push({ text: `NaN ${nan} · Inf ${inf}`, kind: "error" });
  }
  const mismatches = flags.filter((f) => !/ NaN and \d+ Inf values$/.test(f));
  if (mismatches.length) badges.push({ text: `⚠ ${mismatches.length} mismatch${mismatches.length === 1 ? "" : "es"}`, kind: "warn" });
  else if (rows.length && !nonfinite.length) badges.push({ text: "✓ agrees", kind: "ok" });
  const blocks = [inspectTable(rows)];
  const lines = flags.map((f) => ({ text: `⚠ ${f}`, kind: / NaN and \d+ Inf values$/.test(f) ? "error" : "warn" }));
  blocks.push({ type: "lines", lines: [...lines, ...eventLines(record)] });
  blocks.push({ type: "lines", lines: footer(record, live) });
  return { badges, blocks };
}

// "[Safe VAE Decode #5, input 'samples'] got bf16 ... Fix: set ..." -> parts; other messages pass through.
export function parseError(message) {
  const text = String(message ?? "").trim();
  const m = /^\[([^\]]+)\]\s*(.*?)(?:\s+Fix:\s*(.*))?$/s.exec(text);
  if (!m) return { where: "", problem: text, fix: "" };
  return { where: m[1], problem: m[2], fix: m[3] ?? "" };
}

const DTYPE_ERROR = /expected scalar type|Input type \(|should be the same|c10::(Half|BFloat16)|unsupported ScalarType|dtype|float16|bfloat16|Half|BFloat16/i;

// The error a run stopped with, for the node that raised it. `packNode`: one of ours (its message explains
// itself); for other nodes a hint is added only when the message looks like a dtype mismatch.
export function errorView(error, packNode) {
  if (!error) return null;
  const { where, problem, fix } = parseError(error.message);
  const precision = /PrecisionError$/.test(error.type ?? "") || Boolean(where && fix);
  if (!packNode && !precision && !DTYPE_ERROR.test(error.message ?? "")) return null;
  const lines = [{ text: `✖ ${where ? `${where}: ` : ""}${problem}`, kind: "error", wrap: true }];
  if (fix) lines.push({ text: `Fix: ${fix}`, kind: "warn", wrap: true });
  if (!packNode && !precision) {
    lines.push({
      text: "Hint: looks like a dtype mismatch. Put a Dtype Inspect on this node's inputs to see what arrives, and route "
        + "MODEL/VAE through Precision Policy (on_mismatch: cast) or a pack node to convert it.",
      kind: "warn", wrap: true,
    });
  }
  const label = precision ? "✖ precision error" : packNode ? "✖ error" : "✖ dtype error";
  return { badge: { text: label, kind: "error" }, lines };
}

// The whole view of a node: `stored` is node.properties.precision_safe ({record, choices}), `live` whether it
// came from a run in this session, `error` the run's error on this node if any.
export function buildView(nodeType, stored, { live = false, error = null } = {}) {
  const packNode = Boolean(nodeType?.startsWith("PrecisionSafe"));
  const err = errorView(error, packNode);
  const record = err && packNode ? null : stored?.record; // a failed run replaces what the last one showed
  let view = { badges: [], blocks: [] };
  if (record) {
    if (nodeType === "PrecisionSafeDtypeInspect") view = inspectView(record, live);
    else if (nodeType === "PrecisionSafePolicy") view = policyView(record, stored.choices, live);
    else view = genericView(record, live);
  }
  if (err) {
    view.badges.unshift(err.badge);
    view.blocks.unshift({ type: "lines", lines: err.lines });
  }
  view.blocks = view.blocks.filter((b) => (b.type === "lines" ? b.lines.length : b.rows.length));
  return view;
}
