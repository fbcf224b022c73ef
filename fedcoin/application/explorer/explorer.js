// FedCoin explorer: a read-only single page over the node's JSON API. No libraries, no build
// step, nothing from the internet. Routes live in the URL hash (#/block/12, #/task/ab…); the
// page polls /status and redraws the current view when the head changes.
"use strict";

const POLL_MS = 2000;
const UNIT = 1e6; // units per FC
const SV_SCALE = 1e6; // Shapley values: fixed point of U units (MARGIN_CAP = 256 per validation sample)
const COLORS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b7791f", "#c53030", "#2c7a7b",
  "#97266d", "#4a5568", "#276749"];

const view = document.getElementById("view");
const live = document.getElementById("live");
let lastHead = null;
let rendering = false;

// --- helpers ---------------------------------------------------------------------------------
function esc(value) {
  return String(value).replace(/[&<>"']/g, (c) => ({
    "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;",
  })[c]);
}

async function api(path) {
  const resp = await fetch(path, { cache: "no-store" });
  const body = await resp.json();
  if (!resp.ok) throw new Error(body.error || `HTTP ${resp.status}`);
  return body;
}

const fc = (units) => (units / UNIT).toLocaleString("en", { maximumFractionDigits: 6 });
const short = (hex) => esc(String(hex).slice(0, 12)) + "…";
const when = (ms) => (ms ? new Date(ms).toISOString().replace("T", " ").slice(0, 19) : "genesis");
const blockLink = (h, text) => `<a href="#/block/${esc(h)}">${text === undefined ? esc(h) : text}</a>`;
const taskLink = (id) => `<a class="task-link" href="#/task/${esc(id)}">${short(id)}</a>`;
const accountLink = (a) => `<a class="account-link" href="#/account/${esc(a)}">${short(a)}</a>`;

function table(headers, rows, cls = "") {
  const head = headers.map((h) => `<th>${esc(h)}</th>`).join("");
  const body = rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join("")}</tr>`).join("");
  return `<table class="${cls}"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function facts(pairs) {
  return `<dl class="facts">${pairs.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${v}</dd>`).join("")}</dl>`;
}

// --- charts (inline SVG) -------------------------------------------------------------------------
// series: [{name, values: [number|null per x]}]; kind "line" or "bar".
function chart(id, title, xs, series, kind, yLabel) {
  const W = 560, H = 220, L = 56, R = 12, T = 24, B = 36;
  const all = series.flatMap((s) => s.values).filter((v) => v !== null && v !== undefined);
  if (!xs.length || !all.length) {
    return `<figure class="chart-box"><figcaption>${esc(title)}</figcaption><p class="muted">no data yet</p></figure>`;
  }
  let lo = Math.min(0, ...all), hi = Math.max(...all);
  if (hi === lo) hi = lo + 1;
  const y = (v) => T + (H - T - B) * (1 - (v - lo) / (hi - lo));
  const band = (W - L - R) / xs.length;
  const x = (i) => L + band * (i + 0.5);
  const parts = [];
  for (let k = 0; k <= 4; k++) {
    const v = lo + ((hi - lo) * k) / 4;
    parts.push(`<line class="grid" x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}"/>`);
    parts.push(`<text class="tick" x="${L - 6}" y="${y(v) + 4}" text-anchor="end">${+v.toPrecision(3)}</text>`);
  }
  xs.forEach((label, i) => {
    parts.push(`<text class="tick" x="${x(i)}" y="${H - B + 16}" text-anchor="middle">${esc(label)}</text>`);
  });
  series.forEach((s, si) => {
    const color = COLORS[si % COLORS.length];
    if (kind === "bar") {
      const w = (band * 0.8) / series.length;
      s.values.forEach((v, i) => {
        if (v === null || v === undefined) return;
        const x0 = L + band * i + band * 0.1 + w * si;
        const top = Math.min(y(v), y(0)), h = Math.abs(y(v) - y(0));
        parts.push(`<rect x="${x0}" y="${top}" width="${w}" height="${Math.max(h, 0.5)}" fill="${color}"><title>${esc(s.name)} · ${esc(xs[i])}: ${+v.toPrecision(6)}</title></rect>`);
      });
    } else {
      const pts = s.values.map((v, i) => (v === null || v === undefined ? null : `${x(i)},${y(v)}`)).filter(Boolean);
      parts.push(`<polyline fill="none" stroke="${color}" stroke-width="2" points="${pts.join(" ")}"/>`);
      s.values.forEach((v, i) => {
        if (v !== null && v !== undefined) {
          parts.push(`<circle cx="${x(i)}" cy="${y(v)}" r="3" fill="${color}"><title>${esc(s.name)} · ${esc(xs[i])}: ${+v.toPrecision(6)}</title></circle>`);
        }
      });
    }
  });
  parts.push(`<text class="axis" x="12" y="${T - 8}">${esc(yLabel)}</text>`);
  const legend = series.length > 1
    ? `<div class="legend">${series.map((s, i) => `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(s.name)}</span>`).join("")}</div>`
    : "";
  return `<figure class="chart-box"><figcaption>${esc(title)}</figcaption>` +
    `<svg class="chart" data-chart="${esc(id)}" data-points="${all.length}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(title)}">${parts.join("")}</svg>${legend}</figure>`;
}

// --- views -----------------------------------------------------------------------------------
async function overview() {
  const status = await api("/status");
  const vset = await api("/validators");
  const from = Math.max(0, status.height - 19);
  const blocks = (await api(`/blocks?from=${from}&limit=20`)).reverse();
  const proposers = {};
  blocks.forEach((b) => { proposers[b.proposer] = (proposers[b.proposer] || 0) + 1; });
  return `<h1>Overview</h1>` +
    facts([
      ["chain", esc(status.chain_id)],
      ["head", `<span id="head">${blockLink(status.head, esc(status.head))}</span>`],
      ["height", `<span id="height">${status.height}</span>`],
      ["head time", when(status.timestamp_ms)],
      ["finality", `<span id="finality">every block shown is committed</span> <span class="muted">— precommits from more than 2/3 of the validators' power; committed blocks are never replaced</span>`],
      ["this node", accountLink(status.node) + ` <span class="muted">${esc(status.address)}</span>`],
      ["peers", status.peers.length ? status.peers.map(esc).join("<br>") : "none"],
      ["mempool", `${status.mempool} transactions`],
      ["pending SV tasks", String(status.pending_sv_tasks)],
    ]) +
    `<h2>Validators</h2><p class="muted">This epoch's set (power is the bond snapshotted at ` +
    `the epoch boundary; the next set from height ${vset.next_epoch_at}). Only they propose ` +
    `and value rounds (commit to and reveal one Shapley table per round).</p>` +
    table(["validator", "power", "share of power", "bond now", `blocks of the last ${blocks.length}`],
      vset.validators.map((v) => [accountLink(v.address), fc(v.power),
        `${(100 * v.power / Math.max(vset.total_power, 1)).toFixed(1)} %`, fc(v.bond),
        String(proposers[v.address] || 0)]), "validators") +
    (vset.unbonding.length ? `<h3>Unbonding</h3>` + table(["address", "amount", "release at"],
      vset.unbonding.map((u) => [accountLink(u.address), fc(u.amount), String(u.release)]),
      "unbonding") : "") +
    `<h2>Latest blocks</h2>` + blockTable(blocks);
}

function blockTable(blocks) {
  return table(["height", "hash", "time", "proposer", "txs", "PoSap"], blocks.map((b) => [
    blockLink(b.height), blockLink(b.hash, short(b.hash)), when(b.timestamp_ms),
    accountLink(b.proposer), String(b.txs.length),
    b.payouts.map((p) => (p.voided ? `voided round ${p.round}` : `settled round ${p.round}`)).join(", "),
  ]), "blocks");
}

async function blockList(args) {
  const status = await api("/status");
  const top = args[0] !== undefined ? Math.min(+args[0], status.height) : status.height;
  const from = Math.max(0, top - 19);
  const blocks = (await api(`/blocks?from=${from}&limit=20`)).reverse();
  const older = from > 0 ? `<a href="#/blocks/${from - 1}">older →</a>` : "";
  const newer = top < status.height ? `<a href="#/blocks/${Math.min(status.height, top + 20)}">← newer</a>` : "";
  return `<h1>Blocks ${from}–${top}</h1>${blockTable(blocks)}<p class="pager">${newer} ${older}</p>`;
}

function txSummary(tx) {
  const b = tx.body;
  switch (tx.kind) {
    case "Transfer": return `${fc(b.amount)} FC to ${accountLink(b.to)}`;
    case "PublishTask": return `publishes task ${taskLink(tx.id)}: ${esc(b.spec.rounds)} rounds × ${fc(b.spec.price_per_round)} FC`;
    case "SubmitRound": return `round ${esc(b.round)} of task ${taskLink(b.task_id)}, ${b.updates.length} clients`;
    case "CloseTask": return `closes task ${taskLink(b.task_id)}`;
    case "ShareCommit": return `commits to a table for SV task ${short(b.sv_task_id)}`;
    case "ShareReveal": return `reveals table ${short(b.root)} for SV task ${short(b.sv_task_id)}` + (b.entries ? ` (${b.entries} entries)` : " (recorded already)");
    case "FraudProof": return `claims entry ${esc(b.position)} of SV task ${short(b.sv_task_id)} is wrong`;
    default: return esc(JSON.stringify(b));
  }
}

function payoutTable(p) {
  const rows = p.clients.map((c, i) => ["client " + (i + 1), accountLink(c.address), (p.sv[i] / SV_SCALE).toFixed(3), fc(c.paid)]);
  rows.push(["server", "", "", fc(p.server)]);
  p.miners.forEach((m) => rows.push(["validator (revealed the table)", accountLink(m.address), "", fc(m.paid)]));
  rows.push(["proposer remainder", "", "", fc(p.proposer_remainder)], ["refund", "", "", fc(p.refund)]);
  return table(["to", "address", "SV (samples)", "paid (FC)"], rows, "payout");
}

async function blockDetail(args) {
  const b = await api(`/blocks/${encodeURIComponent(args[0])}`);
  let html = `<h1>Block ${b.height}</h1>` + facts([
    ["hash", esc(b.hash)], ["parent", b.height ? blockLink(b.parent, esc(b.parent)) : esc(b.parent)],
    ["time", when(b.timestamp_ms)], ["creator", accountLink(b.proposer)],
    ["state root", esc(b.state_root)],
    ["certificate", b.commit_round === null ? `<span class="muted">not yet stored</span>` : `committed in round ${b.commit_round}`],
  ]);
  html += `<h2>Transactions (${b.txs.length})</h2>` + table(["id", "kind", "sender", "nonce", "fee (FC)", "what"],
    b.txs.map((t) => [short(t.id), esc(t.kind), accountLink(t.sender), String(t.nonce), fc(t.fee), txSummary(t)]), "txs");
  b.payouts.forEach((p) => {
    html += `<h2>Proof of Shapley: round ${p.round} of task ${taskLink(p.task_id)} ${p.voided ? "voided" : "settled"}</h2>` +
      payoutTable(p);
  });
  const nav = `<p class="pager">${b.height > 0 ? blockLink(b.height - 1, "← previous") : ""} ${blockLink(b.height + 1, "next →")}</p>`;
  return html + nav;
}

async function taskList() {
  const tasks = await api("/tasks");
  return `<h1>Tasks</h1>` + table(["id", "name", "status", "rounds", "price/round (FC)", "escrow left (FC)", "server"],
    tasks.map((t) => [taskLink(t.id), esc(t.spec.name), esc(t.status), `${t.rounds_done}/${t.spec.rounds}`,
      fc(t.spec.price_per_round), fc(t.escrow), accountLink(t.spec.server)]), "tasks");
}

async function taskDetail(args) {
  const t = await api(`/tasks/${encodeURIComponent(args[0])}`);
  const rounds = t.rounds || [];
  const settled = rounds.filter((r) => r.settled && r.payout && !r.payout.voided);
  const xs = settled.map((r) => `r${r.round}`);
  const clients = [...new Set(settled.flatMap((r) => r.payout.clients.map((c) => c.address)))];
  const perClient = (pick) => clients.map((a) => ({
    name: a.slice(0, 10) + "…",
    values: settled.map((r) => {
      const i = r.payout.clients.findIndex((c) => c.address === a);
      return i < 0 ? null : pick(r, i);
    }),
  }));
  const cumulative = perClient((r, i) => r.payout.clients[i].paid / UNIT).map((s) => {
    let sum = 0;
    return { name: s.name, values: s.values.map((v) => (sum += v || 0)) };
  });
  let html = `<h1>Task ${short(t.id)}</h1>` + facts([
    ["id", esc(t.id)], ["name", esc(t.spec.name)], ["status", `<span id="task-status">${esc(t.status)}</span>`],
    ["rounds", `${t.rounds_done} of ${t.spec.rounds}`], ["price per round", fc(t.spec.price_per_round) + " FC"],
    ["escrow left", fc(t.escrow) + " FC"], ["publisher", accountLink(t.publisher)], ["server", accountLink(t.spec.server)],
    ["created at", blockLink(t.created_height)], ["validation samples", t.validation_samples === null ? "unknown (not fetched)" : String(t.validation_samples)],
    ["split (bps)", esc(t.spec.split_bps.join(" / ")) + ` <span class="muted">clients / server / miners</span>`],
  ]);
  html += `<div class="charts">` +
    chart("accuracy", "Accuracy of each round's model (validation set)", xs,
      [{ name: "accuracy", values: settled.map((r) => r.accuracy) }], "line", "accuracy") +
    chart("sv", "Shapley value per client (U units, 256 = one sample at full margin)", xs, perClient((r, i) => r.payout.sv[i] / SV_SCALE), "bar", "SV") +
    chart("pay", "Pay per client per round (FC)", xs, perClient((r, i) => r.payout.clients[i].paid / UNIT), "bar", "FC") +
    chart("cumulative", "Cumulative pay per client (FC)", xs, cumulative, "line", "FC") +
    `</div>`;
  const valuation = (v) => `${esc(v.phase)} (attempt ${v.attempt}): ${v.commits}/${v.committee.length} committed` +
    ` by ${v.commit_end}, ${v.reveals} revealed by ${v.reveal_end}, ${v.tables} table(s)`;
  html += `<h2>Rounds</h2>` + table(["round", "submitted", "settled", "accuracy", "clients", "paid to clients (FC)", "revealers", "slashed"],
    rounds.map((r) => [String(r.round), blockLink(r.submitted_height),
      r.settled ? blockLink(r.settled_height) + (r.payout && r.payout.voided ? " (voided)" : "") : (r.valuation ? valuation(r.valuation) : "pending"),
      r.accuracy === null ? "–" : r.accuracy.toFixed(3), String(r.updates.length),
      r.payout ? fc(r.payout.clients.reduce((s, c) => s + c.paid, 0)) : "–",
      r.revealers.map(accountLink).join(" "), r.slashed.map(accountLink).join(" ")]), "rounds");
  if (clients.length) {
    const totals = clients.map((a) => settled.reduce((sum, r) => {
      const c = r.payout.clients.find((x) => x.address === a);
      return sum + (c ? c.paid : 0);
    }, 0));
    html += `<h2>Clients</h2>` + table(["client", "total paid (FC)"], clients.map((a, i) => [accountLink(a), fc(totals[i])]), "clients");
  }
  const miners = {};
  settled.forEach((r) => r.payout.miners.forEach((m) => { miners[m.address] = (miners[m.address] || 0) + m.paid; }));
  html += `<h2>Validators' pay for valuing the rounds</h2>` + table(["validator", "paid (FC)"], Object.entries(miners).map(([a, v]) => [accountLink(a), fc(v)]), "miners");
  return html;
}

async function account(args) {
  const a = await api(`/accounts/${encodeURIComponent(args[0])}`);
  const tasks = await api("/tasks");
  const mine = tasks.filter((t) => t.publisher === a.address || t.spec.server === a.address);
  return `<h1>Account</h1>` + facts([
    ["address", `<span id="account-address">${esc(a.address)}</span>`], ["balance", `<span id="balance">${fc(a.balance)}</span> FC`],
    ["nonce", String(a.nonce)],
  ]) + (mine.length ? `<h2>Tasks it publishes or serves</h2>` + table(["task", "status"], mine.map((t) => [taskLink(t.id), esc(t.status)])) : "");
}

const ROUTES = { "": overview, blocks: blockList, block: blockDetail, tasks: taskList, task: taskDetail, account };

async function render() {
  if (rendering) return;
  rendering = true;
  const [name, ...args] = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  const route = ROUTES[name] || overview;
  try {
    view.innerHTML = await route(args);
    view.dataset.route = name || "overview";
  } catch (err) {
    view.innerHTML = `<h1>Not found</h1><p class="error">${esc(err.message)}</p>`;
  } finally {
    rendering = false;
    document.body.dataset.rendered = String(Date.now());
  }
}

async function poll() {
  try {
    const status = await api("/status");
    live.textContent = `height ${status.height}`;
    live.className = "ok";
    if (lastHead !== null && status.head !== lastHead) await render();
    lastHead = status.head;
  } catch (err) {
    live.textContent = "node unreachable";
    live.className = "error";
  }
}

document.getElementById("search").addEventListener("submit", (event) => {
  event.preventDefault();
  const q = document.getElementById("query").value.trim();
  if (/^\d+$/.test(q)) location.hash = `#/block/${q}`;
  else if (/^fc/i.test(q)) location.hash = `#/account/${q}`;
  else if (/^[0-9a-f]{64}$/i.test(q)) {
    api(`/tasks/${q}`).then(() => { location.hash = `#/task/${q}`; }, () => { location.hash = `#/block/${q}`; });
  }
});
window.addEventListener("hashchange", render);
render();
poll();
setInterval(poll, POLL_MS);
