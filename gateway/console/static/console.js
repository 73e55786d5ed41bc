// checkgate console: live board, actions with confirmation and per-node results, live log tail.
// Plain JS, no framework. All HTML comes from the server's templates; text from the network is only
// ever set with textContent, never innerHTML (the board fragment is server-rendered and escaped).
"use strict";

(function () {
  const meta = (name) => document.querySelector(`meta[name="${name}"]`).content;
  const base = meta("base");

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function fmtDuration(s) {
    s = Math.floor(s);
    const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
    const two = (n) => String(n).padStart(2, "0");
    if (d) return `${d}d ${two(h)}h`;
    if (h) return `${h}h ${two(m)}m`;
    return m ? `${m}m ${two(s % 60)}s` : `${s}s`;
  }

  // ---------------------------------------------------------------- the board
  function board(root) {
    const selected = new Set();
    const filter = document.getElementById("filter");
    const results = document.getElementById("results");
    const live = document.getElementById("live");
    let renderedAt = Date.now();
    let refreshing = null;

    function applyFilter() {
      const words = (filter.value || "").toLowerCase().split(/\s+/).filter(Boolean);
      for (const item of root.querySelectorAll("tr.proc, .nodecard")) {
        const hay = (item.dataset.search || "").toLowerCase();
        item.classList.toggle("hidden", !words.every((w) => hay.includes(w)));
        if (item.classList.contains("nodecard")) item.hidden = item.classList.contains("hidden");
      }
    }

    function syncSelection() {
      for (const box of root.querySelectorAll('input[name="target"]')) box.checked = selected.has(box.value);
      const count = document.getElementById("selcount");
      if (!count) return;
      count.textContent = `${selected.size} selected`;
      for (const b of document.querySelectorAll('button[data-scope="selection"]')) b.disabled = selected.size === 0;
    }

    async function refresh() {
      if (refreshing) return refreshing;
      const view = root.dataset.view;
      refreshing = fetch(`${base}/board?view=${encodeURIComponent(view)}`, { credentials: "same-origin" })
        .then((r) => (r.ok ? r.text() : Promise.reject(new Error(`HTTP ${r.status}`))))
        .then((html) => {
          root.innerHTML = html; // server-rendered, escaped by the template engine
          renderedAt = Date.now();
          syncSelection();
          applyFilter();
        })
        .catch(() => live && live.classList.replace("on", "off"))
        .finally(() => (refreshing = null));
      return refreshing;
    }

    // Pushed updates: the server says when what the board shows has changed.
    const events = new EventSource(`${base}/events`);
    events.addEventListener("state", (e) => {
      const shown = root.querySelector(".board");
      if (!shown || String(JSON.parse(e.data).version) !== shown.dataset.version) refresh();
    });
    events.onopen = () => { live.className = "live on"; live.textContent = "live"; };
    events.onerror = () => { live.className = "live off"; live.textContent = "reconnecting…"; };

    // Uptimes tick in the browser between two pushes.
    setInterval(() => {
      const elapsed = (Date.now() - renderedAt) / 1000;
      for (const u of root.querySelectorAll(".uptime")) u.textContent = fmtDuration(Number(u.dataset.uptime) + elapsed);
    }, 1000);

    filter.addEventListener("input", applyFilter);
    root.addEventListener("change", (e) => {
      const box = e.target;
      if (box.name === "target") {
        box.checked ? selected.add(box.value) : selected.delete(box.value);
      } else if (box.classList.contains("selall")) {
        for (const row of box.closest("table").querySelectorAll("tr.proc:not(.hidden) input[name=target]")) {
          box.checked ? selected.add(row.value) : selected.delete(row.value);
        }
      }
      syncSelection();
    });
    const clear = document.getElementById("clearsel");
    if (clear) clear.addEventListener("click", () => { selected.clear(); syncSelection(); });

    function describe(b) {
      const d = b.dataset;
      const verb = d.action === "rolling" ? "Rolling-restart" : d.action[0].toUpperCase() + d.action.slice(1);
      const many = (n, what) => `${n} ${what}${Number(n) === 1 ? "" : "es"}`;
      if (d.scope === "process") return `${verb} ${d.node}/${d.process}?`;
      if (d.scope === "node") return `${verb} all ${many(d.count, "process")} on ${d.node}?`;
      if (d.scope === "group") {
        return `${verb} group ${d.group}: ${many(d.count, "process")} on ${d.nodes} node(s)?` +
          (d.action === "rolling" ? "\nOne node at a time; each must be RUNNING and healthy before the next." : "");
      }
      if (d.scope === "selection") {
        const nodes = new Set([...selected].map((k) => k.split("/")[0]));
        return `${verb} ${many(selected.size, "process")} on ${nodes.size} node(s)?`;
      }
      return `${verb} EVERY process on EVERY node?`;
    }

    function showResults(body, title) {
      results.hidden = false;
      results.replaceChildren();
      results.className = `results result-${body.result || "error"}`;
      const close = el("button", "link close", "dismiss");
      close.type = "button";
      close.addEventListener("click", () => (results.hidden = true));
      results.append(close, el("strong", "", title));
      if (body.error) { results.append(el("p", "fail", body.error)); return; }
      results.append(el("span", "muted", ` — ${body.result} in ${(body.duration_ms / 1000).toFixed(1)} s`));
      const list = el("ul");
      for (const n of body.nodes) {
        const item = el("li", n.ok ? "ok" : "fail", `${n.ok ? "✔" : "✘"} ${n.node}`);
        if (n.error) item.append(el("span", "", `: ${n.error}`));
        if (n.health) item.append(el("span", "muted", ` · health ${n.health}`));
        const procs = el("ul");
        for (const p of n.processes) procs.append(el("li", p.ok ? "ok" : "fail", `${p.process}: ${p.message}`));
        if (n.processes.length) item.append(procs);
        list.append(item);
      }
      results.append(list);
    }

    document.addEventListener("click", async (e) => {
      const b = e.target.closest("button.act");
      if (!b || b.disabled) return;
      const d = b.dataset;
      const destructive = d.action !== "start" || d.scope === "all";
      if (destructive && !window.confirm(describe(b))) return;
      const form = new URLSearchParams({ _xsrf: meta("xsrf"), action: d.action, scope: d.scope });
      for (const key of ["node", "process", "group"]) if (d[key]) form.set(key, d[key]);
      if (d.scope === "selection") for (const key of selected) form.append("target", key);
      if (destructive) form.set("confirm", "yes");
      const title = describe(b).replace(/\?$/, "").split("\n")[0];
      showResults({ result: "running", nodes: [], duration_ms: 0 }, `${title} …`);
      b.classList.add("busy");
      try {
        const r = await fetch(`${base}/action`, { method: "POST", body: form, credentials: "same-origin" });
        const body = await r.json().catch(() => ({ error: `HTTP ${r.status}` }));
        showResults(r.ok ? body : { error: body.error || `HTTP ${r.status}` }, body.target ? `${d.action} ${body.target}` : title);
      } catch (err) {
        showResults({ error: String(err) }, title);
      } finally {
        b.classList.remove("busy");
        refresh();
      }
    });

    syncSelection();
  }

  // ---------------------------------------------------------------- the live tail
  function tail(view) {
    const log = document.getElementById("log");
    const live = document.getElementById("live");
    const problem = document.getElementById("problem");
    const follow = document.getElementById("follow");
    const pause = document.getElementById("pause");
    const MAX_CHARS = 400000;
    let paused = false;
    let held = [];

    function append(text, cls) {
      if (paused) { held.push([text, cls]); return; }
      const piece = cls ? el("span", cls, text) : document.createTextNode(text);
      log.append(piece);
      while (log.textContent.length > MAX_CHARS && log.firstChild) log.firstChild.remove();
      if (follow.checked) log.scrollTop = log.scrollHeight;
    }

    const q = new URLSearchParams({ node: view.dataset.node, process: view.dataset.process, stream: view.dataset.stream });
    const events = new EventSource(`${base}/tail/stream?${q}`);
    events.addEventListener("log", (e) => {
      const data = JSON.parse(e.data);
      problem.hidden = true;
      if (data.reset) append("\n[log cleared or rotated]\n", "gap");
      if (data.skipped) append(`\n[… ${data.skipped} bytes skipped]\n`, "gap");
      append(data.text);
    });
    events.addEventListener("problem", (e) => {
      const data = JSON.parse(e.data);
      problem.textContent = data.message + (data.final ? "" : " (retrying)");
      problem.hidden = false;
      if (data.final) { events.close(); live.className = "live off"; live.textContent = "stopped"; }
    });
    events.onopen = () => { live.className = "live on"; live.textContent = "live"; };
    events.onerror = () => { live.className = "live off"; live.textContent = "reconnecting…"; };

    pause.addEventListener("click", () => {
      paused = !paused;
      pause.textContent = paused ? "Resume" : "Pause";
      if (!paused) { const queued = held; held = []; for (const [t, c] of queued) append(t, c); }
    });
    document.getElementById("clear").addEventListener("click", () => log.replaceChildren());
    document.getElementById("wrap").addEventListener("change", (e) => log.classList.toggle("wrap", e.target.checked));
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.getElementById("board");
    if (root) board(root);
    const view = document.getElementById("tail");
    if (view) tail(view);
  });
})();
