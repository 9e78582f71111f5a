// Usage: node socket_bench.mjs <baseUrl> <token> <tenantId> <clients>
//          [--batch 500] [--namespace /api/v1] [--event agent-updated]
//          [--transports polling,websocket] [--connect-timeout-ms 20000]
//
// The bench may start several of these, each with a share of the clients,
// so that parsing the broadcasts is not one core's work: each reports its
// own receipts, raw latencies included, and the bench merges them.
//
// The client half of tests/src/bin/socket_bench.rs: opens <clients> sockets
// with the seed frontend's own socket.io-client v4, as its `useSocket` hook
// does (`io(VITE_API_URL, { auth: { token, tenantId } })`), and times the
// tenant broadcasts the bench publishes.
//
// Talks to the orchestrator in JSON lines on stdout (progress goes to
// stderr):
//   {"phase":"connected", ...}  once every socket connected or failed, and
//                               the upgrades to websocket settled;
//   then it waits for "done <broadcasts>" on stdin (the bench published
//   that many `<event>` carrying {benchSeq, sentAtMs}), waits until every
//   socket received every broadcast (or 15 s), and prints
//   {"phase":"result", ...} with the receipts' raw latencies (ms, to the
//                               microsecond): the bench takes the
//                               percentiles over every process's.
// EOF on stdin ends it at any time.
import { io } from "socket.io-client";
import { createInterface } from "node:readline";

const [base, token, tenantId, clientsArg, ...rest] = process.argv.slice(2);
const clients = Number.parseInt(clientsArg ?? "", 10);
if (!base || !token || !tenantId || !Number.isInteger(clients) || clients < 1) {
  console.error("usage: node socket_bench.mjs <baseUrl> <token> <tenantId> <clients> [--batch N] [--namespace NS] [--event NAME] [--transports a,b] [--connect-timeout-ms N]");
  process.exit(2);
}
const opts = { batch: 500, namespace: "/api/v1", event: "agent-updated", transports: "polling,websocket", connectTimeoutMs: 20000 };
for (let i = 0; i < rest.length; i += 2) {
  const [flag, value] = [rest[i], rest[i + 1]];
  if (value === undefined) { console.error(`${flag} needs a value`); process.exit(2); }
  switch (flag) {
    case "--batch": opts.batch = Math.max(1, Number.parseInt(value, 10) || 1); break;
    case "--namespace": opts.namespace = value; break;
    case "--event": opts.event = value; break;
    case "--transports": opts.transports = value; break;
    case "--connect-timeout-ms": opts.connectTimeoutMs = Math.max(1000, Number.parseInt(value, 10) || 20000); break;
    default: console.error(`unknown argument ${flag}`); process.exit(2);
  }
}
const transports = opts.transports.split(",").map((t) => t.trim()).filter(Boolean);

// Wall-clock milliseconds with sub-millisecond resolution, comparable with the
// bench's SystemTime on the same machine.
const nowMs = () => performance.timeOrigin + performance.now();
// Resolves once the line is written: stdout to a pipe is asynchronous, and
// exiting earlier cut a result line (its raw latencies) at 64 KiB.
const emit = (obj) =>
  new Promise((resolve) => process.stdout.write(JSON.stringify(obj) + "\n", resolve));
const progress = (msg) => process.stderr.write(`[socket_bench.mjs] ${msg}\n`);

const sockets = [];
const connectErrors = new Map();
const disconnects = new Map();
let connected = 0;
let failed = 0;
// Receipts: one latency per (socket, broadcast); counts per broadcast and per
// socket to find who missed what.
const latencies = [];
const perSeq = new Map();
// First and last receipt of each broadcast: the first shows how long the
// relay took to start, the spread how long the fan-out to every socket took.
const perSeqFirst = new Map();
const perSeqLast = new Map();
const perSocket = new Uint32Array(clients);
let duplicates = 0;
let foreign = 0;
let receiptsChanged = () => {};

const bump = (map, key) => map.set(key, (map.get(key) ?? 0) + 1);

// The refusal text the api sent, or the transport failure beneath
// "xhr poll error" / "websocket error" (an HTTP status or a socket error).
function describe(e) {
  const message = e?.message ?? String(e);
  const d = e?.description;
  if (d === undefined || d === null) return message;
  if (typeof d === "number") return `${message}: HTTP ${d}`;
  const inner = d.code ?? d.message ?? d.error?.code ?? d.error?.message ?? d.type;
  return inner ? `${message}: ${inner}` : message;
}

function open(index) {
  return new Promise((resolve) => {
    const socket = io(`${base}${opts.namespace === "/" ? "" : opts.namespace}`, {
      auth: { token, tenantId },
      transports,
      // One connection per client, as many browser tabs would have.
      forceNew: true,
      // A failure is counted, not retried: a reconnecting client would hide it.
      reconnection: false,
      timeout: opts.connectTimeoutMs,
    });
    const seen = new Set();
    let settled = false;
    // The client's `timeout` covers the transport's opening only: a
    // namespace CONNECT the server never answers would wait forever.
    const deadline = setTimeout(
      () => settle(false, `no connect within ${opts.connectTimeoutMs + 10000} ms`),
      opts.connectTimeoutMs + 10000,
    );
    const settle = (ok, why) => {
      if (settled) return;
      settled = true;
      clearTimeout(deadline);
      if (ok) connected += 1;
      else { failed += 1; bump(connectErrors, why); socket.close(); }
      resolve();
    };
    socket.on("connect", () => settle(true));
    socket.on("connect_error", (e) => settle(false, describe(e)));
    socket.on("disconnect", (reason, description) => {
      if (settled) bump(disconnects, reason);
      else settle(false, `closed before connect: ${describe({ message: reason, description })}`);
    });
    socket.on(opts.event, (data) => {
      const at = nowMs();
      if (typeof data?.benchSeq !== "number" || typeof data?.sentAtMs !== "number") { foreign += 1; return; }
      if (seen.has(data.benchSeq)) { duplicates += 1; return; }
      seen.add(data.benchSeq);
      const latency = at - data.sentAtMs;
      latencies.push(latency);
      bump(perSeq, data.benchSeq);
      if (!perSeqFirst.has(data.benchSeq)) perSeqFirst.set(data.benchSeq, latency);
      perSeqLast.set(data.benchSeq, latency);
      perSocket[index] += 1;
      receiptsChanged();
    });
    sockets.push(socket);
  });
}

const started = nowMs();
for (let first = 0; first < clients; first += opts.batch) {
  const batch = [];
  for (let i = first; i < Math.min(clients, first + opts.batch); i++) batch.push(open(i));
  await Promise.all(batch);
  progress(`${connected} connected, ${failed} failed of ${clients}`);
}
const connectMs = nowMs() - started;

// The frontend's default starts on long-polling and upgrades; the memory to
// measure is the steady state, so wait (bounded) for the upgrades.
const transportCounts = () => {
  const counts = {};
  for (const s of sockets) {
    if (!s.connected) continue;
    const name = s.io?.engine?.transport?.name ?? "unknown";
    counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
};
if (transports.includes("websocket") && transports.length > 1) {
  const deadline = nowMs() + 15000;
  while (nowMs() < deadline && (transportCounts().polling ?? 0) > 0) {
    await new Promise((r) => setTimeout(r, 200));
  }
}

const cpuSeconds = () => {
  const { user, system } = process.cpuUsage();
  return (user + system) / 1e6;
};
const top = (map) => Object.fromEntries([...map.entries()].sort((a, b) => b[1] - a[1]).slice(0, 20));
emit({
  phase: "connected",
  requested: clients,
  connected,
  failed,
  stillConnected: sockets.filter((s) => s.connected).length,
  connectErrors: top(connectErrors),
  disconnects: top(disconnects),
  transports: transportCounts(),
  connectSeconds: connectMs / 1000,
  nodeRssMb: process.memoryUsage().rss / 1048576,
  nodeCpuSeconds: cpuSeconds(),
});

async function finish(broadcasts) {
  const live = sockets.filter((s) => s.connected).length;
  const expected = broadcasts * live;
  if (latencies.length < expected) {
    await new Promise((resolve) => {
      const timer = setTimeout(resolve, 15000);
      receiptsChanged = () => {
        if (latencies.length >= expected) { clearTimeout(timer); resolve(); }
      };
    });
  }
  const received = [];
  const spread = [];
  for (let seq = 0; seq < broadcasts; seq++) {
    received.push(perSeq.get(seq) ?? 0);
    const round = (v) => (v === undefined ? null : Math.round(v * 10) / 10);
    spread.push([round(perSeqFirst.get(seq)), round(perSeqLast.get(seq))]);
  }
  let socketsMissingSome = 0;
  for (let i = 0; i < sockets.length; i++) {
    if (sockets[i].connected && perSocket[i] < broadcasts) socketsMissingSome += 1;
  }
  await emit({
    phase: "result",
    connected,
    stillConnected: sockets.filter((s) => s.connected).length,
    disconnects: top(disconnects),
    broadcasts,
    expectedReceipts: expected,
    receipts: latencies.length,
    receivedPerBroadcast: received,
    firstLastMsPerBroadcast: spread,
    socketsMissingSome,
    duplicates,
    foreign,
    latencies: Array.from(latencies, (v) => Math.round(v * 1000) / 1000),
    nodeRssMb: process.memoryUsage().rss / 1048576,
    nodeCpuSeconds: cpuSeconds(),
  });
  for (const s of sockets) s.close();
  process.exit(0);
}

let finishing = false;
const lines = createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const [cmd, n] = line.trim().split(/\s+/);
  if (cmd === "done" && !finishing) {
    finishing = true;
    const broadcasts = Number.parseInt(n ?? "", 10);
    finish(Number.isInteger(broadcasts) && broadcasts >= 0 ? broadcasts : 0);
  }
});
lines.on("close", () => {
  if (finishing) return;
  for (const s of sockets) s.close();
  process.exit(0);
});
