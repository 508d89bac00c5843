/// The built-in dashboard at `/` of the admin server: one self-contained page (no CDN,
/// works offline) that reads the admin API and `/stats` and refreshes every 5 seconds.
enum DashboardPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <title>Grayscale</title>
    <style>
      body { font: 14px/1.4 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 0; background: #f6f8fa; color: #1f2328; }
      header { background: #24292f; color: white; padding: 10px 20px; display: flex; justify-content: space-between; }
      main { padding: 16px 20px; display: grid; gap: 16px; }
      section { background: white; border: 1px solid #d0d7de; border-radius: 6px; padding: 12px 16px; }
      h2 { font-size: 16px; margin: 0 0 8px; }
      .split { font-family: ui-monospace, Menlo, monospace; white-space: pre; }
      .bar { height: 14px; background: #2da44e; border-radius: 3px; position: relative; overflow: hidden; margin: 6px 0; }
      .bar span { position: absolute; top: 0; bottom: 0; background: #cf222e; }
      .charts { display: grid; grid-template-columns: 1fr 1fr; gap: 12px; }
      table { border-collapse: collapse; width: 100%; font-size: 12px; }
      td, th { border-bottom: 1px solid #eaeef2; padding: 3px 6px; text-align: left; vertical-align: top; }
      .pass { color: #1a7f37; } .fail { color: #cf222e; } .inconclusive { color: #6e7781; }
      .muted { color: #6e7781; }
      svg text { font-size: 10px; fill: #57606a; }
    </style>
    </head>
    <body>
    <header><strong>Grayscale</strong><span id="updated" class="muted">loading…</span></header>
    <main id="main"><section>Loading…</section></main>
    <script>
    const colors = ["#1f6feb", "#cf222e", "#8250df", "#bf8700", "#2da44e"];
    function esc(text) { return String(text ?? "").replace(/[&<>"]/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\"": "&quot;"}[c])); }
    function version(ref) { return ref ? `Version ${ref.number}(${ref.label.startsWith("v") ? "v " + ref.label.slice(1) : ref.label})` : "none"; }
    function chart(title, series, unit) {
      const w = 460, h = 140, pad = 28;
      const all = series.flatMap(s => s.points);
      if (all.length === 0) return `<div><strong>${esc(title)}</strong><div class="muted">no traffic in the last hour</div></div>`;
      const t0 = Math.min(...all.map(p => p.t)), t1 = Math.max(...all.map(p => p.t), t0 + 1);
      const vmax = Math.max(...all.map(p => p.v), unit === "%" ? 1 : 10);
      const x = t => pad + (t - t0) / (t1 - t0) * (w - pad - 8), y = v => h - 18 - v / vmax * (h - 30);
      const lines = series.map((s, i) => `<polyline fill="none" stroke="${colors[i % colors.length]}" stroke-width="1.5" points="${s.points.map(p => x(p.t).toFixed(1) + "," + y(p.v).toFixed(1)).join(" ")}"/>`).join("");
      const legend = series.map((s, i) => `<tspan fill="${colors[i % colors.length]}">■ ${esc(s.name)}</tspan>`).join("  ");
      return `<div><strong>${esc(title)}</strong><svg width="${w}" height="${h}" role="img"><rect x="${pad}" y="8" width="${w - pad - 8}" height="${h - 26}" fill="none" stroke="#d0d7de"/>` +
        `<text x="2" y="14">${vmax.toFixed(unit === "%" ? 2 : 0)}${unit}</text><text x="2" y="${h - 18}">0</text>${lines}<text x="${pad}" y="${h - 4}">${legend}</text></svg></div>`;
    }
    async function get(path) { const r = await fetch(path); if (!r.ok) throw new Error(path + ": HTTP " + r.status); return r.json(); }
    async function refresh() {
      try {
        const since = Math.floor(Date.now() / 1000) - 3600;
        const [services, audit, stats, controllers, dead] = await Promise.all([get("/api/v1/services"), get("/api/v1/audit?limit=25"),
          get("/stats?since=" + since), get("/api/v1/controllers"), get("/api/v1/notifications/dead")]);
        const sections = [];
        const lease = controllers.lease, standby = controllers.controllers.filter(c => c.role === "standby").map(c => c.holder);
        sections.push(`<section id="controllers"><h2>Controller</h2><div>` + (lease ? (Date.parse(lease.expiresAt) > Date.now()
            ? `${esc(lease.holder)} decides (lease token ${lease.token})` : `no controller holds the lease (last: ${esc(lease.holder)})`)
          : "no controller has run on this database") + (standby.length ? `; standing by: ${standby.map(esc).join(", ")}` : "") + `</div></section>`);
        if (dead.length) sections.push(`<section id="dead-letters"><h2>Notifications Slack refused</h2><table><tr><th>time</th><th>service</th><th>channel</th><th>why</th><th>message</th></tr>` +
          dead.map(n => `<tr><td>${esc(new Date(n.deadAt).toLocaleTimeString())}</td><td>${esc(n.service)}</td><td>${esc(n.channel)}</td><td class="fail">${esc(n.lastError)}</td><td>${esc(n.text)}</td></tr>`).join("") + `</table></section>`);
        for (const service of services) {
          const split = service.split, rollout = service.rollout;
          const range = split && split.canary ? split.canary.range : null;
          const lines = [`Stable ${version(split ? split.stable : null)} : other`,
            split && split.canary ? `Canary ${version(split.canary)} appid range: ${range.text}` : "Canary: none (all traffic to stable)",
            `Non-Auth GrayScale Weight: ${split ? split.nonAuthWeightPercent : 0}%`];
          if (split && split.canary && split.canary.mirrorPercent) lines.push(`Mirror: ${split.canary.mirrorPercent}% of stable's GET and HEAD requests copied to the canary`);
          let rolloutHTML = "";
          if (rollout) {
            const verdict = rollout.lastVerdict;
            rolloutHTML = `<div>Rollout of ${esc(version(rollout.release))}: <strong>${esc(rollout.phase)}</strong>, step ${rollout.step + 1}${rollout.manual ? " (manual)" : ""}` +
              (rollout.holdReason ? ` — <span class="muted">${esc(rollout.holdReason)}</span>` : "") + `</div>` +
              (verdict ? `<div>Last verdict: <span class="${verdict.outcome}">${esc(verdict.outcome)}</span> — ${esc(verdict.reason)}</div>` : "");
            try {
              const report = await get(`/api/v1/services/${encodeURIComponent(service.name)}/rollout?limit=12`);
              rolloutHTML += `<table><tr><th>time</th><th>verdict</th><th>reason</th></tr>` + report.verdicts.slice().reverse().map(v =>
                `<tr><td>${esc(new Date(v.at).toLocaleTimeString())}</td><td class="${v.outcome}">${esc(v.outcome)}</td><td>${esc(v.reason)}</td></tr>`).join("") + `</table>`;
            } catch (e) {}
          }
          const versions = stats.versions.filter(v => v.service === service.name);
          const errorSeries = versions.map(v => ({name: `${v.release} (${v.label})`, points: v.windows.map(w => ({t: Date.parse(w.start) / 1000, v: w.requests ? 100 * w.errors / w.requests : 0}))}));
          const latencySeries = versions.map(v => ({name: `${v.release} (${v.label}) p99`, points: v.windows.filter(w => w.requests).map(w => ({t: Date.parse(w.start) / 1000, v: w.latencyMs.p99}))}));
          const width = range ? range.percent : 0;
          const platform = service.platform ? ` <span class="muted platform">platform release ${esc(service.platform.label)} (${service.platform.services.map(esc).join(", ")})</span>` : "";
          sections.push(`<section><h2>${esc(service.name)}${platform}</h2><div class="split">${lines.map(esc).join("\n")}</div>` +
            `<div class="bar" title="canary share of users"><span style="left:${range ? range.fromBucket / 100 : 0}%;width:${width}%"></span></div>` +
            rolloutHTML + `<div class="charts">${chart("Error rate by version, last hour", errorSeries, "%")}${chart("p99 latency by version, last hour (ms)", latencySeries, "")}</div></section>`);
        }
        if (services.length === 0) sections.push(`<section>No services yet: publish a release (grayscale release publish).</section>`);
        sections.push(`<section><h2>Audit log</h2><table><tr><th>time</th><th>who</th><th>service</th><th>action</th><th>outcome</th><th>detail</th></tr>` +
          audit.slice().reverse().map(a => `<tr><td>${esc(new Date(a.at).toLocaleTimeString())}</td><td>${esc(a.actor)}</td><td>${esc(a.service)}</td><td>${esc(a.action)}</td><td>${esc(a.outcome)}</td><td>${esc(a.detail || a.command || "")}</td></tr>`).join("") + `</table></section>`);
        document.getElementById("main").innerHTML = sections.join("");
        document.getElementById("updated").textContent = "updated " + new Date().toLocaleTimeString();
      } catch (error) {
        document.getElementById("updated").textContent = "refresh failed: " + error.message;
      }
    }
    refresh();
    setInterval(refresh, 5000);
    </script>
    </body>
    </html>
    """#
}
