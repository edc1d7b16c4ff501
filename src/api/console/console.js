// The ops console: one page over the order API (/v1/...), with no framework and nothing fetched from outside.
// Views are addressed by the URL's fragment, so that each can be bookmarked, shared and reached with Back:
//   #/flow  #/stage/<milestone>  #/stalled  #/insight  #/team/<team>  #/order/<order id>  #/search/<text>
// The shown view is asked again every few seconds and redrawn only when its answer changed, so that a reader's
// place and keyboard focus are kept between updates.
"use strict";

const REFRESH_MS = 5000;
const TOKEN_KEY = "ordertrail.token";
const TEAM_KEY = "ordertrail.team";

const state = {
  classes: [], teams: [], lastAnswer: "", answers: [], paused: false, timer: null, inFlight: false, generation: 0,
  tokenAsked: null,
  boundTeam: undefined,
};

// ---- Talking to the API -------------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, generation = state.generation) {
  const headers = { Accept: "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(path, { headers, cache: "no-store" });
  if (response.status === 401) {
    await askForToken();
    return api(path, generation);
  }
  const text = await response.text();
  // What the view was drawn from: a refresh redraws only when an answer changed.
  if (generation === state.generation) state.answers.push(`${path}\n${text}`);
  let body = {};
  try {
    body = JSON.parse(text);
  } catch {
    // An error without a JSON body is reported by its status below.
  }
  if (!response.ok) throw new ApiError(response.status, body.message || `HTTP ${response.status}`);
  return body;
}

/** Asks for a token once, however many requests were refused together; a cancelled dialog keeps the old one. */
function askForToken() {
  if (state.tokenAsked) return state.tokenAsked;
  const dialog = document.getElementById("token-dialog");
  const input = document.getElementById("token-input");
  state.tokenAsked = new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        const token = input.value.trim();
        if (token) sessionStorage.setItem(TOKEN_KEY, token);
        // Another token may belong to another team.
        state.boundTeam = undefined;
        input.value = "";
        state.tokenAsked = null;
        resolve();
      },
      { once: true },
    );
    if (!dialog.open) dialog.showModal();
    input.focus();
  });
  return state.tokenAsked;
}

// ---- Small helpers --------------------------------------------------------------------------------------------

/** Text safe to put into HTML. */
function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function link(hash, text) {
  return `<a href="#/${hash.split("/").map(encodeURIComponent).join("/")}">${esc(text)}</a>`;
}

function orderLink(id) {
  return link(`order/${id}`, id);
}

/** "3 d 4 h", "12 min", "45 s": how long, for people. */
function duration(ms) {
  if (ms == null) return "";
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  if (h < 48) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** An RFC 3339 time in the reader's own time zone. */
function when(text) {
  if (!text) return "";
  const t = new Date(text);
  return isNaN(t) ? text : t.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

function words(name) {
  return String(name ?? "").replaceAll("_", " ");
}

function article(word) {
  return /^[aeiou]/i.test(word) ? "an" : "a";
}

function statusBadge(status) {
  return `<span class="status ${esc(status)}">${esc(words(status))}</span>`;
}

function classChip(name) {
  const index = state.classes.findIndex((c) => c.class === name);
  return `<span class="chip c${index < 0 ? 7 : index % 8}">${esc(words(name))}</span>`;
}

function table(headers, rows, empty) {
  if (!rows.length) return `<p class="empty">${esc(empty)}</p>`;
  const head = headers.map((h) => `<th scope="col"${h.startsWith("#") ? ' class="num"' : ""}>${esc(h.replace(/^#/, ""))}</th>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${rows.map((r) => `<tr>${r.join("")}</tr>`).join("")}</tbody></table>`;
}

const td = (html) => `<td>${html}</td>`;
const num = (html) => `<td class="num">${html}</td>`;

// ---- Views ----------------------------------------------------------------------------------------------------

async function flowView() {
  const flow = await api("/v1/flow");
  remember(flow);
  const stages = flow.stages
    .map((s) => {
      const label = `${words(s.stage)}: ${s.open} open, ${s.at_risk} at risk, ${s.breached} breached, ${s.blocked} blocked`;
      const cls = s.breached ? "has-breach" : s.at_risk ? "has-risk" : "";
      return `<li class="stage ${cls}" data-stage="${esc(s.stage)}">
        <a class="card" href="#/stage/${encodeURIComponent(s.stage)}" aria-label="${esc(label)}">
          <span class="name">${esc(s.stage === "none" ? "not started" : words(s.stage))}</span>
          <span class="owner">${esc(s.owner || "before the first milestone")}</span>
          <span class="open">${s.open.toLocaleString()} <small>open</small></span>
          <span class="counts">
            <span class="count risk${s.at_risk ? "" : " zero"}">at risk <b>${s.at_risk}</b></span>
            <span class="count breach${s.breached ? "" : " zero"}">breached <b>${s.breached}</b></span>
            <span class="count blocked${s.blocked ? "" : " zero"}">blocked <b>${s.blocked}</b></span>
          </span>
          <span class="chips">${Object.entries(s.exceptions).map(([c, n]) => `${classChip(c)} ${n}`).join(" ")}</span>
        </a></li>`;
    })
    .join("");
  const legend = flow.exception_classes.map((c) => `<span>${classChip(c.class)} owned by ${esc(c.owner)}</span>`).join("");
  const heading = flow.open_orders === 1 ? "Where the one open order is" : `Where the ${flow.open_orders.toLocaleString()} open orders are`;
  return `<h2>${heading}</h2>
    <p class="lede">Each stage is the furthest milestone an order reached. An order is <b>at risk</b> when past orders
      like it (same warehouse, segment or carrier, else all orders) missed a running SLA clock's deadline at least
      ${Math.round(flow.risk_threshold * 100)} % of the time once they had run as long (until enough are known: when the clock has
      used ${Math.round(flow.at_risk_share * 100)} % of its time), <b>breached</b> when a deadline passed
      without its milestone, <b>blocked</b> when an open exception holds up the next milestone. Choose a stage to list its orders.</p>
    <ol class="flow" aria-label="Stages, in order">${stages}</ol>
    <div class="legend" aria-label="Exception classes">${legend}</div>`;
}

async function stageView(stage) {
  const page = await api(`/v1/orders?status=open&stage=${encodeURIComponent(stage)}`);
  const rows = page.orders.map((o) => [
    td(orderLink(o.order_id)),
    td(o.next ? esc(words(o.next.milestone)) : ""),
    td(o.next ? esc(o.next.owner) : ""),
    td(statusBadge(o.sla_status)),
    td(o.exception_classes.map(classChip).join(" ")),
    td(esc(when(o.last_seen))),
  ]);
  return `<h2>Open orders at ${esc(stage === "none" ? "no milestone yet" : words(stage))}</h2>
    <p class="lede">${link("flow", "Back to the flow")}${page.next_page_token ? ` · the newest ${page.orders.length} are shown` : ""}</p>
    ${table(["Order", "Waiting for", "Next action owner", "SLA", "Open exceptions", "Last span"], rows, "No open order is at this stage.")}`;
}

function stalledRows(list) {
  return list.orders.map((o) => [
    td(orderLink(o.order_id)),
    num(esc(duration(o.overdue_ms))),
    td(`<b>${esc(o.owner)}</b>`),
    td(esc(o.reason)),
    td(esc(words(o.stage ?? "none"))),
    td(o.next ? esc(words(o.next.milestone)) : ""),
    td(o.trace_url ? `<a href="${esc(o.trace_url)}" rel="noopener">order trace</a>` : `<code>${esc(o.trace_id)}</code>`),
    td(recommendation(o.next && o.next.playbook)),
  ]);
}

const STALLED_HEADERS = ["Order", "#Overdue by", "Owner of the next action", "Why", "Stage", "Waiting for", "Trace", "Recommended"];

// A playbook's recommendation: the action, its team and urgency, and the runbook when there is one.
function recommendation(p) {
  if (!p) return "";
  const runbook = p.runbook ? ` <a href="${esc(p.runbook)}" rel="noopener">runbook</a>` : "";
  return `<span class="playbook urgency-${esc(p.urgency)}" title="playbook ${esc(p.name)}">${esc(p.action)} <small>(${esc(p.team)}, ${esc(p.urgency)})</small>${runbook}</span>`;
}

function percent(p) {
  return p === undefined || p === null ? "" : `${Math.round(p * 100)} %`;
}

async function insightView() {
  const [risk, patterns, bottlenecks] = await Promise.all([api("/v1/risk"), api("/v1/patterns?limit=20"), api("/v1/bottlenecks")]);
  const riskRows = risk.orders.map((c) => [
    td(orderLink(c.order_id)),
    td(`${esc(words(c.milestone))} <small>(SLA ${esc(c.target)})</small>`),
    td(`<b>${esc(c.owner)}</b>`),
    td(esc(when(c.deadline))),
    num(esc(duration(c.remaining_ms))),
    num(esc(percent(c.probability))),
    td(esc(c.basis)),
  ]);
  const patternRows = patterns.patterns.map((p) => [
    td(classChip(p.class)),
    td(esc(words(p.milestone ?? ""))),
    td(esc(p.system)),
    td(`<code>${esc(p.template)}</code>`),
    num(p.in_kept_windows),
    num(p.orders_affected),
    td(esc(p.trend)),
    td(p.recent_orders.slice(0, 3).map(orderLink).join(", ")),
    td(esc(p.playbook ?? "")),
  ]);
  const bottleneckRows = bottlenecks.transitions.slice(0, 6).map((t) => {
    const standout = t.dimensions.map((d) => d.values[0] && (d.values[0].p90_vs_overall > 1.2 || d.values[0].breach_share > 0.5)
      ? `${esc(words(d.dimension))} ${esc(d.values[0].value)}: p90 ${esc(duration(d.values[0].p90_ms))}, ${Math.round(d.values[0].breach_share * 100)} % of breaches` : "")
      .filter(Boolean).join("; ");
    return [td(`${esc(words(t.from))} → ${esc(words(t.to))}`), num(t.orders), num(esc(duration(t.median_ms))), num(esc(duration(t.p90_ms))), num(t.breaches), td(standout)];
  });
  return `<h2>At risk, recurring and slow</h2>
    <section aria-labelledby="at-risk"><h3 id="at-risk">Orders at risk (${risk.orders.length})</h3>
      <p class="lede">Running SLA clocks whose breach probability, from how long past orders like them took, reached ${Math.round(risk.threshold * 100)} %. Nearest deadline first.</p>
      ${table(["Order", "Awaiting", "Owner", "Deadline", "#Left", "#Probability", "Based on"], riskRows, "No order is at risk.")}</section>
    <section aria-labelledby="patterns"><h3 id="patterns">Recurring exception patterns</h3>
      <p class="lede">Exception reasons with ids, numbers and dates masked, busiest in the last ${esc(duration(patterns.window_seconds * 1000))} first.</p>
      ${table(["Class", "Milestone", "System", "Pattern", "#Last day", "#Orders", "Trend", "Recent orders", "Playbook"], patternRows, "No exception yet.")}</section>
    <section aria-labelledby="bottlenecks"><h3 id="bottlenecks">Bottlenecks</h3>
      ${table(["Transition", "#Orders", "#Median", "#p90", "#Breaches", "What stands out"], bottleneckRows, "No transition measured yet.")}</section>`;
}

async function stalledView() {
  const list = await api("/v1/stalled");
  return `<h2>Stalled and breached orders</h2>
    <p class="lede">${list.total === 1 ? "One open order is" : `${list.total} open orders are`} stuck: a deadline passed without its milestone, or an open exception
      blocks the next one. Most overdue first.</p>
    ${table(STALLED_HEADERS, stalledRows(list), "No order is stalled.")}`;
}

async function teamView(team) {
  if (!state.teams.length) remember(await api("/v1/flow"));
  // A token bound to a team shows that team's queue, and the choice is not offered.
  if (state.boundTeam === undefined) state.boundTeam = (await api("/v1/me")).team || null;
  if (state.boundTeam) team = state.boundTeam;
  // `#/team` shows the team chosen last in this browser; `#/team/` (choosing none) forgets it.
  if (team === undefined) team = localStorage.getItem(TEAM_KEY) || "";
  if (!team) localStorage.removeItem(TEAM_KEY);
  const options = ['<option value="">Choose a team…</option>']
    .concat(state.teams.map((t) => `<option${t === team ? " selected" : ""}>${esc(t)}</option>`))
    .join("");
  const picker = state.boundTeam
    ? `<p class="team-picker">The queue of <b>${esc(state.boundTeam)}</b>, the team your token belongs to.</p>`
    : `<div class="team-picker"><label for="team-select">Team</label><select id="team-select">${options}</select></div>`;
  if (!team) return `<h2>My team's queue</h2>${picker}<p class="lede">Choose the team whose queue to show.</p>`;
  localStorage.setItem(TEAM_KEY, team);
  const q = encodeURIComponent(team);
  const [stalled, exceptions, waiting] = await Promise.all([
    api(`/v1/stalled?owner=${q}`),
    api(`/v1/exceptions?owner=${q}`),
    api(`/v1/orders?status=open&owner=${q}`),
  ]);
  const exceptionRows = exceptions.groups.map((g) => [
    td(classChip(g.class)),
    td(Object.entries(g.by_milestone).map(([m, n]) => `${esc(words(m))} (${n})`).join(", ")),
    num(g.open),
    num(g.orders),
    td(esc(when(g.oldest_open_since))),
    td(g.sample_orders.map(orderLink).join(", ")),
  ]);
  const waitingRows = waiting.orders.map((o) => [
    td(orderLink(o.order_id)),
    td(o.next ? esc(words(o.next.milestone)) : ""),
    td(o.next && o.next.deadline ? esc(when(o.next.deadline)) : ""),
    td(statusBadge(o.sla_status)),
    td(o.exception_classes.map(classChip).join(" ")),
  ]);
  return `<h2>Queue of ${esc(team)}</h2>${picker}
    <section aria-labelledby="team-stalled"><h3 id="team-stalled">Stalled orders whose next action is ours (${stalled.total})</h3>
      ${table(STALLED_HEADERS, stalledRows(stalled), "Nothing of ours is stalled.")}</section>
    <section aria-labelledby="team-exceptions"><h3 id="team-exceptions">Open exceptions we own</h3>
      ${table(["Class", "Milestones", "#Open", "#Orders", "Oldest open since", "Orders"], exceptionRows, "No open exception is ours.")}</section>
    <section aria-labelledby="team-waiting"><h3 id="team-waiting">Open orders waiting on us</h3>
      ${table(["Order", "Waiting for", "Due", "SLA", "Open exceptions"], waitingRows, "No open order waits on us.")}</section>`;
}

async function orderView(id) {
  const o = await api(`/v1/orders/${encodeURIComponent(id)}`);
  const next = o.next
    ? `<p class="next${o.next.blocked_by ? " blocked" : ""}"><b>Next:</b> ${esc(words(o.next.milestone))}, owned by
        <b class="next-owner">${esc(o.next.owner)}</b>${o.next.deadline ? `, due ${esc(when(o.next.deadline))}` : ""}${o.next.overdue ? " — <b>overdue</b>" : ""}${
        o.next.blocked_by ? `. Blocked by ${article(o.next.blocked_by.class)} ${esc(words(o.next.blocked_by.class))} exception since ${esc(when(o.next.blocked_by.since))}: ${esc(o.next.blocked_by.reason)}` : ""}</p>`
    : "";
  const recommended = o.next && o.next.playbook ? `<p class="recommended"><b>Recommended:</b> ${recommendation(o.next.playbook)}</p>` : "";
  const risks = o.slas.filter((s) => s.at_risk_at && s.status === "pending")
    .map((s) => `<p class="risk"><b>At risk:</b> ${esc(words(s.to))} (SLA ${esc(s.target)}), found ${esc(when(s.at_risk_at))}${
      s.risk_probability !== undefined ? `, breach probability ${esc(percent(s.risk_probability))}` : ""}: ${esc(s.risk_basis ?? "")}</p>`)
    .join("");
  const trace = o.trace_url
    ? `<a class="trace-link" href="${esc(o.trace_url)}" rel="noopener">Open the order trace</a>`
    : `Order trace id <code class="trace-link">${esc(o.trace_id)}</code>`;
  const milestones = o.milestones.map((m) => [
    td(esc(words(m.name))),
    td(esc(m.owner)),
    td(statusBadge(m.state)),
    td(esc(when(m.reached_at))),
    num(esc(duration(m.duration_ms))),
    td(esc(when(m.deadline))),
    td(m.sla_status ? statusBadge(m.sla_status) : ""),
    td(esc(m.system ?? "")),
    td(esc(m.actor ?? "")),
  ]);
  const exceptions = o.exceptions.map((e) => [
    td(classChip(e.class)),
    td(esc(e.owner)),
    td(esc(words(e.milestone ?? ""))),
    td(esc(e.reason)),
    td(statusBadge(e.status)),
    td(esc(when(e.first_seen))),
    td(esc(e.system)),
    td(esc(e.actor ?? "")),
  ]);
  const dims = Object.entries(o.dimensions).map(([k, v]) => `<div><dt>${esc(words(k))}</dt><dd>${esc(v)}</dd></div>`).join("");
  return `<h2>Order <span class="order-id">${esc(o.order_id)}</span></h2>
    <dl class="facts">
      <div><dt>Status</dt><dd>${statusBadge(o.status)}</dd></div>
      <div><dt>Stage</dt><dd>${esc(words(o.stage ?? "none"))}</dd></div>
      <div><dt>SLA</dt><dd>${statusBadge(o.sla_status)}</dd></div>
      <div><dt>Open exceptions</dt><dd>${o.open_exceptions}</dd></div>
      <div><dt>First span</dt><dd>${esc(when(o.first_seen))}</dd></div>
      <div><dt>Last span</dt><dd>${esc(when(o.last_seen))}</dd></div>
      ${dims}
      <div><dt>Trace</dt><dd>${trace}</dd></div>
    </dl>
    ${next}${recommended}${risks}
    <h3>Timeline</h3>
    <div class="timeline">${timelineSvg(o)}</div>
    <h3>Accountability</h3>
    ${table(["Milestone", "Owner", "State", "Reached", "#Took", "Deadline", "SLA", "System", "Actor"], milestones, "No milestone yet.")}
    <h3>Exceptions</h3>
    ${table(["Class", "Owner", "Milestone", "Reason", "Status", "First seen", "System", "Actor"], exceptions, "No exception.")}`;
}

/** Milestones on a time axis, one row each, with their SLA clocks from start to deadline and the exceptions. */
function timelineSvg(o) {
  const t = (text) => (text ? new Date(text).getTime() : NaN);
  const now = Date.now();
  const rows = o.milestones.filter((m) => m.reached_at || o.slas.some((s) => s.to === m.name) || !m.off_path);
  const times = [t(o.first_seen), t(o.last_seen), now];
  rows.forEach((m) => times.push(t(m.reached_at), t(m.deadline)));
  o.slas.forEach((s) => times.push(t(s.started_at), t(s.deadline)));
  o.exceptions.forEach((e) => times.push(t(e.first_seen)));
  const known = times.filter((x) => !isNaN(x));
  const start = Math.min(...known);
  const end = Math.max(...known) + 1;
  const left = 190, right = 980, top = 28, lane = 24;
  const x = (ms) => left + ((ms - start) / (end - start)) * (right - left);
  const height = top + (rows.length + 1) * lane + 20;
  const parts = [];
  // Axis ticks: five, labelled in the reader's time zone.
  for (let i = 0; i <= 4; i++) {
    const ms = start + ((end - start) * i) / 4;
    const label = new Date(ms).toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
    parts.push(`<line class="axis" x1="${x(ms)}" x2="${x(ms)}" y1="${top - 8}" y2="${height - 16}" stroke-opacity=".25"/>`);
    const anchor = i === 0 ? "start" : i === 4 ? "end" : "middle";
    parts.push(`<text class="tick" x="${x(ms)}" y="${top - 12}" text-anchor="${anchor}">${esc(label)}</text>`);
  }
  rows.forEach((m, i) => {
    const y = top + i * lane + lane / 2;
    parts.push(`<text x="${left - 8}" y="${y + 4}" text-anchor="end">${esc(words(m.name))}</text>`);
    parts.push(`<line class="axis" x1="${left}" x2="${right}" y1="${y}" y2="${y}" stroke-opacity=".35"/>`);
    o.slas
      .filter((s) => s.to === m.name && s.deadline)
      .forEach((s) => {
        const breached = s.status === "breached" || s.status === "late";
        parts.push(`<line x1="${x(t(s.started_at))}" x2="${x(t(s.deadline))}" y1="${y + 7}" y2="${y + 7}" stroke="${breached ? "#c62828" : "#9aa4b5"}" stroke-width="3"><title>SLA ${esc(s.target)}: ${esc(words(s.from))} → ${esc(words(s.to))}, ${esc(duration(s.allowed_ms))} allowed</title></line>`);
        parts.push(`<line class="${breached ? "deadline" : "deadline-met"}" x1="${x(t(s.deadline))}" x2="${x(t(s.deadline))}" y1="${y - 9}" y2="${y + 11}"><title>Deadline of ${esc(s.target)}: ${esc(when(s.deadline))} (${esc(words(s.status))})</title></line>`);
        if (s.at_risk_at) {
          const label = `${words(s.to)} found at risk ${when(s.at_risk_at)}${s.risk_probability !== undefined ? ` (${percent(s.risk_probability)})` : ""}: ${s.risk_basis ?? ""}`;
          parts.push(`<rect class="at-risk" x="${x(t(s.at_risk_at)) - 5}" y="${y + 2}" width="10" height="10" transform="rotate(45 ${x(t(s.at_risk_at))} ${y + 7})" tabindex="0" role="img" aria-label="${esc(label)}"><title>${esc(label)}</title></rect>`);
        }
      });
    if (m.reached_at) {
      const late = m.sla_status === "late" || m.sla_status === "breached";
      const who = [m.system, m.actor].filter(Boolean).join(", ");
      parts.push(`<circle class="${late ? "late" : "reached"}" cx="${x(t(m.reached_at))}" cy="${y}" r="6" tabindex="0" role="img" aria-label="${esc(words(m.name))} reached ${esc(when(m.reached_at))}${who ? ` by ${esc(who)}` : ""}"><title>${esc(words(m.name))} reached ${esc(when(m.reached_at))}${who ? ` by ${esc(who)}` : ""}</title></circle>`);
    }
  });
  const ey = top + rows.length * lane + lane / 2;
  parts.push(`<text x="${left - 8}" y="${ey + 4}" text-anchor="end">exceptions</text>`);
  o.exceptions.forEach((e) => {
    const ex = x(t(e.first_seen));
    const label = `${words(e.class)} (${e.owner}) at ${words(e.milestone ?? "")}: ${e.reason}${e.actor ? `, ${e.actor}` : ""}`;
    parts.push(`<path class="${e.status === "open" ? "exception" : "resolved"}" d="M${ex},${ey - 7} L${ex + 7},${ey + 6} L${ex - 7},${ey + 6} Z" tabindex="0" role="img" aria-label="${esc(label)}"><title>${esc(label)}</title></path>`);
  });
  parts.push(`<line class="now" x1="${x(now)}" x2="${x(now)}" y1="${top - 8}" y2="${height - 16}"><title>now</title></line>`);
  const summary = `Timeline of ${o.order_id}: ${rows.filter((m) => m.reached_at).length} milestones reached, ${o.exceptions.length} exceptions, ${o.slas.length} SLA clocks`;
  return `<svg viewBox="0 0 1000 ${height}" role="img" aria-label="${esc(summary)}">${parts.join("")}</svg>`;
}

async function searchView(text) {
  const found = await api(`/v1/search?q=${encodeURIComponent(text)}`);
  if (found.matches.length === 1 && !state.refreshing) {
    location.replace(`#/order/${encodeURIComponent(found.matches[0].order_id)}`);
    return "";
  }
  const rows = found.matches.map((m) => [td(orderLink(m.order_id)), td(esc(m.via === "order" ? "order number" : `${words(m.via)} ${m.value}`))]);
  return `<h2>Orders for “${esc(text)}”</h2>${table(["Order", "Found by"], rows, "No order or alias has this value.")}`;
}

// ---- Routing and refresh -------------------------------------------------------------------------------------

function remember(flow) {
  state.classes = flow.exception_classes;
  state.teams = flow.teams;
}

function route() {
  const [view, ...rest] = location.hash.replace(/^#\/?/, "").split("/");
  let arg;
  try {
    arg = decodeURIComponent(rest.join("/"));
  } catch {
    arg = rest.join("/");
  }
  switch (view) {
    case "stage": return { nav: "flow", render: () => stageView(arg) };
    case "stalled": return { nav: "stalled", render: stalledView };
    case "insight": return { nav: "insight", render: insightView };
    case "team": return { nav: "team", render: () => teamView(rest.length ? arg : undefined) };
    case "order": return { nav: "", render: () => orderView(arg) };
    case "search": return { nav: "", render: () => searchView(arg) };
    default: return { nav: "flow", render: flowView };
  }
}

async function show(refreshing) {
  // A refresh waits for the view being drawn; a new view is drawn at once, and what an older one answers is dropped.
  if (refreshing && state.inFlight) return;
  const generation = ++state.generation;
  state.inFlight = true;
  state.refreshing = refreshing;
  const main = document.getElementById("main");
  const { nav, render } = route();
  document.querySelectorAll("header nav a").forEach((a) => {
    if (a.dataset.view === nav) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  let html;
  state.answers = [];
  try {
    // Every view colours exception classes; the flow and team views ask for them themselves.
    if (!state.classes.length && render !== flowView && nav !== "team") remember(await api("/v1/flow"));
    html = await render();
  } catch (e) {
    html = `<p class="error">${esc(e.status === 404 ? e.message : `The API did not answer: ${e.message}`)}</p>`;
  }
  if (generation !== state.generation) return;
  state.inFlight = false;
  const status = document.getElementById("status");
  status.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  // Compared by the API's answers, not the HTML: the timeline's "now" moves at every refresh, and redrawing the
  // view for that alone would take the reader's keyboard focus and place away.
  // Sorted: parallel requests answer in any order.
  const answer = [...state.answers].sort().join("\n\n") || html;
  if (html === "" || (refreshing && answer === state.lastAnswer)) return;
  state.lastAnswer = answer;
  main.innerHTML = html;
  main.dataset.ready = "true";
  main.dataset.view = location.hash;
  const select = document.getElementById("team-select");
  if (select) select.addEventListener("change", () => (location.hash = `#/team/${encodeURIComponent(select.value)}`));
  // After a move to another view, focus goes to its content, as after a page load; on the first load it stays at
  // the top of the page, where a keyboard user starts.
  if (!refreshing && state.moved) main.focus({ preventScroll: true });
}

function schedule() {
  clearInterval(state.timer);
  state.timer = setInterval(() => {
    if (!state.paused && document.visibilityState === "visible") show(true);
  }, REFRESH_MS);
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("search").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = document.getElementById("search-input").value.trim();
    if (text) location.hash = `#/search/${encodeURIComponent(text)}`;
  });
  const pause = document.getElementById("pause");
  pause.addEventListener("click", () => {
    state.paused = !state.paused;
    pause.setAttribute("aria-pressed", String(state.paused));
    pause.textContent = state.paused ? "Resume updates" : "Pause updates";
  });
  window.addEventListener("hashchange", () => {
    state.moved = true;
    state.lastAnswer = "";
    show(false);
  });
  show(false);
  schedule();
});
