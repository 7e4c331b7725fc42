// "Refresh live" on the VM page: queue a live query, wait for the guest sensor's answer,
// redraw the process and connection tables. Text goes in through textContent only.
(function () {
  "use strict";
  const section = document.getElementById("live");
  const button = document.getElementById("refresh-live");
  const status = document.getElementById("live-status");
  if (!section || !button) return;
  const vm = section.dataset.vm;
  const csrf = section.dataset.csrf;

  function cell(row, value) {
    const td = document.createElement("td");
    td.textContent = value === null || value === undefined ? "" : String(value);
    row.appendChild(td);
  }

  function fill(tableId, rows, columns) {
    const body = document.querySelector("#" + tableId + " tbody");
    body.replaceChildren();
    for (const item of rows) {
      const tr = document.createElement("tr");
      for (const col of columns) cell(tr, col(item));
      body.appendChild(tr);
    }
  }

  async function poll(taskId, deadline) {
    while (Date.now() < deadline) {
      const r = await fetch("/api/v1/tasks/" + taskId, { credentials: "same-origin" });
      const task = await r.json();
      if (task.status === "done") return task;
      if (task.status === "failed") throw new Error(task.error || "the sensor could not answer");
      await new Promise((ok) => setTimeout(ok, 500));
    }
    throw new Error("no answer from the sensor within 60 s");
  }

  button.addEventListener("click", async () => {
    button.disabled = true;
    status.textContent = "asking the guest sensor…";
    try {
      const r = await fetch("/api/v1/vms/" + vm + "/live-query", {
        method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf },
      });
      const body = await r.json();
      if (!r.ok) throw new Error(body.detail || r.statusText);
      status.textContent = "waiting for the next heartbeat…";
      const task = await poll(body.id, Date.now() + 60000);
      const res = task.result || { processes: [], connections: [] };
      fill("processes", res.processes, [
        (p) => p.pid, (p) => p.ppid, (p) => p.name, (p) => p.username,
        (p) => p.uid + "/" + p.euid, (p) => p.exe, (p) => (p.cmdline || []).join(" "),
        (p) => (p.stdio_sockets || []).join(","),
      ]);
      fill("connections", res.connections, [
        (c) => c.proto, (c) => c.laddr + ":" + c.lport,
        (c) => (c.raddr ? c.raddr + ":" + c.rport : ""), (c) => c.status, (c) => c.pid,
        (c) => c.process_name,
      ]);
      status.textContent = "live at " + new Date(task.completed_at).toISOString() + " (" +
        res.processes.length + " processes, " + res.connections.length + " connections)";
    } catch (err) {
      status.textContent = "live query failed: " + err.message;
    } finally {
      button.disabled = false;
    }
  });
})();
