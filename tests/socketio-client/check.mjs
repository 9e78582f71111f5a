// Usage: node check.mjs <baseUrl> <token> <tenantId> <email>
// Connects exactly as the seed's useSocket hook does, triggers a job and
// prints one JSON object describing what happened.
import { io } from "socket.io-client";

const [base, token, tenantId, email] = process.argv.slice(2);
const results = {};

function attempt(name, url, auth, onConnect) {
  return new Promise((resolve) => {
    const socket = io(url, { auth, reconnection: false, timeout: 5000 });
    const done = (value) => {
      if (!(name in results)) results[name] = value;
      socket.close();
      resolve();
    };
    const timer = setTimeout(() => done("timeout"), 8000);
    socket.on("connect_error", (e) => { clearTimeout(timer); done("refused: " + e.message); });
    socket.on("connect", () => {
      results[name] = "connected";
      if (!onConnect) { clearTimeout(timer); done("connected"); return; }
      onConnect(socket, () => { clearTimeout(timer); done("connected"); });
    });
  });
}

await attempt("apiV1Namespace", `${base}/api/v1`, { token, tenantId }, (socket, finish) => {
  socket.on("job-updated", (job) => {
    (results.jobEvents ??= []).push(`${job.type}:${job.status}`);
    if (job.status === "SUCCEEDED") finish();
  });
  fetch(`${base}/api/v1/auth/forgot-password`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ email }),
  });
});
await attempt("rootNamespace", base, { token, tenantId });
await attempt("badToken", `${base}/api/v1`, { token: "x.y.z", tenantId });
await attempt("foreignTenant", `${base}/api/v1`, { token, tenantId: "65a1b2c3d4e5f6a7b8c9d0e1" });
await attempt("noAuth", base, {});
console.log(JSON.stringify(results));
process.exit(0);
