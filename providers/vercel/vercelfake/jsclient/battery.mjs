// Drives Vercel's official client (@vercel/sandbox, pinned by
// package-lock.json) against vercelfake through every operation the fake
// claims. Run by jsclient_test.go with FAKE_URL and the fake's credentials
// in the environment. Prints one JSON object of results on stdout, which
// the Go test checks; any error the client throws ends the script with a
// non-zero exit and the stack on stderr.
import { Sandbox, Snapshot, APIError } from "@vercel/sandbox";
import { fetch as undiciFetch, WebSocket } from "undici";
import { Writable } from "node:stream";

const { FAKE_URL, FAKE_TOKEN, FAKE_TEAM, FAKE_PROJECT } = process.env;
const t0 = Date.now();
const timings = {};
const lap = (what) => { timings[what] = Date.now() - t0; };
if (!FAKE_URL) throw new Error("FAKE_URL is not set");

// The client's API base is fixed; send it to the fake, and nothing
// anywhere else.
const API = "https://vercel.com/api";
globalThis.fetch = (input, init) => {
  const url = typeof input === "string" ? input : input.url;
  if (!url.startsWith(API)) throw new Error(`battery: refusing to fetch ${url}`);
  return undiciFetch(FAKE_URL + "/api" + url.slice(API.length), init);
};

const creds = { token: FAKE_TOKEN, teamId: FAKE_TEAM, projectId: FAKE_PROJECT };
const results = {};
function collector() {
  const chunks = [];
  const w = new Writable({ write(c, _e, cb) { chunks.push(Buffer.from(c)); cb(); } });
  w.text = () => Buffer.concat(chunks).toString();
  return w;
}
async function status(promise) {
  try {
    await promise;
    return "ok";
  } catch (err) {
    if (err instanceof APIError) return err.response.status;
    throw err;
  }
}

// Create, with a domain-only network policy (no CIDR lists).
const a = await Sandbox.create({
  ...creds, name: "js-a", ports: [3000], env: { GREETING: "hi" }, tags: { suite: "js" },
  networkPolicy: { allow: ["example.com"] }, resources: { vcpus: 2 }, timeout: 600000,
});
results.create = {
  name: a.name, status: a.status, runtime: a.runtime, cwd: a.cwd, vcpus: a.vcpus,
  policy: a.networkPolicy, domain: a.domain(3000), persistent: a.persistent,
};

lap("create");
// Exec: streams, exit code, environment, user.
const out = collector(), err = collector();
const r = await a.runCommand({ cmd: "sh", args: ["-c", "echo out; echo $GREETING $X >&2; exit 3"], env: { X: "x" }, stdout: out, stderr: err });
results.exec = { exitCode: r.exitCode, stdout: await r.stdout(), stderr: await r.stderr(), streamedOut: out.text(), streamedErr: err.text() };
results.pwd = (await (await a.runCommand("pwd")).stdout()).trim();
results.user = (await (await a.runCommand("id", ["-un"])).stdout()).trim();
results.sudoUser = (await (await a.runCommand({ cmd: "id", args: ["-un"], sudo: true })).stdout()).trim();
results.missing = (await a.runCommand("no-such-program-xyz")).exitCode;

lap("exec");
// Detached, logs while it runs, kill, wait, get.
const d = await a.runCommand({ cmd: "sh", args: ["-c", "echo started; exec sleep 60"], detached: true });
let seen = "";
for await (const line of d.logs()) {
  seen += line.data;
  if (seen.includes("started")) break;
}
await d.kill("SIGTERM");
const killed = await d.wait();
const again = await a.getCommand(d.cmdId);
results.kill = { logs: seen, exitCode: killed.exitCode, getExitCode: (await again.wait()).exitCode };

lap("kill");

// Stdin (only through a PTY on Vercel): the client gets the interactive
// session's address; the WebSocket protocol is the CLI's.
const { url: ptyURL, token: ptyToken } = await a.openInteractive();
results.pty = await new Promise((resolve, reject) => {
  const ws = new WebSocket(`${ptyURL}?token=${encodeURIComponent(ptyToken)}`);
  ws.binaryType = "arraybuffer";
  let output = "";
  ws.onopen = () => {
    ws.send(JSON.stringify({ type: "start", command: "sh", args: ["-c", "read line; echo got:$line"], env: [], cwd: "", cols: 80, rows: 24 }));
    ws.send(new TextEncoder().encode("typed\r"));
  };
  ws.onmessage = (ev) => {
    if (typeof ev.data === "string") {
      const msg = JSON.parse(ev.data);
      if (msg.type === "exit") { ws.close(); resolve({ output, exitCode: msg.code }); }
    } else {
      output += Buffer.from(ev.data).toString();
    }
  };
  ws.onerror = (ev) => reject(new Error(`pty websocket: ${ev.message ?? ev.type}`));
});
lap("pty");
// Files.
await a.writeFiles([
  { path: "dir/a.txt", content: "hello" },
  { path: "/tmp/b.bin", content: new Uint8Array([0, 255, 1, 10]) },
]);
await a.mkDir("newdir");
results.files = {
  text: (await a.readFileToBuffer({ path: "dir/a.txt" })).toString(),
  binary: [...(await a.readFileToBuffer({ path: "/tmp/b.bin" }))],
  missing: await a.readFileToBuffer({ path: "nope.txt" }),
  mkdir: (await a.runCommand("test", ["-d", "newdir"])).exitCode,
  mkdirAgain: await a.mkDir("newdir").then(() => "ok", (e) => e.response?.status ?? String(e)),
  owner: (await (await a.runCommand("stat", ["-c", "%U", "dir/a.txt"])).stdout()).trim(),
};

lap("files");
// Network policy: per-domain rules, CIDRs, modes.
await a.updateNetworkPolicy({
  allow: { "api.example.com": [{ transform: [{ headers: { authorization: "Bearer s3cret" } }] }], "*": [] },
  subnets: { deny: ["10.0.0.0/8"] },
});
results.policyRules = (await Sandbox.get({ ...creds, name: "js-a" })).networkPolicy;
await a.update({ networkPolicy: "deny-all" });
results.policyDenyAll = (await Sandbox.get({ ...creds, name: "js-a" })).networkPolicy;
await a.update({ networkPolicy: "allow-all", resources: { vcpus: 4 } });
const afterUpdate = await Sandbox.get({ ...creds, name: "js-a" });
results.update = { policy: afterUpdate.networkPolicy, vcpus: afterUpdate.vcpus };
const timeoutBefore = a.currentSession().timeout;
await a.extendTimeout(60000);
results.extend = { before: timeoutBefore, after: a.currentSession().timeout };

lap("policy");
// Snapshot (stops the session; the next command resumes it), listing,
// get, create from it, delete.
await a.writeFiles([{ path: "snap.txt", content: "in the snapshot" }]);
const snap = await a.snapshot({ expiration: 3600000 });
results.snapshot = {
  id: snap.snapshotId, status: snap.status,
  lifetime: snap.expiresAt.getTime() - snap.createdAt.getTime(),
  afterResume: (await (await a.runCommand("cat", ["snap.txt"])).stdout()),
};
const snaps = await Snapshot.list({ ...creds, name: "js-a" });
results.snapshotList = (await snaps.toArray()).map((s) => s.id);
results.snapshotGet = (await Snapshot.get({ ...creds, snapshotId: snap.snapshotId })).status;
const b = await Sandbox.create({ ...creds, name: "js-b", source: { type: "snapshot", snapshotId: snap.snapshotId } });
results.fromSnapshot = await (await b.runCommand("cat", ["snap.txt"])).stdout();

lap("snapshot");
// List with pagination, sorting and a tag filter.
await Sandbox.create({ ...creds, name: "js-c", tags: { suite: "js" } });
await Sandbox.create({ ...creds, name: "js-d" });
const paged = await Sandbox.list({ ...creds, limit: 2, sortBy: "name", sortOrder: "asc" });
let pages = 0;
const names = [];
for await (const page of paged.pages()) {
  pages++;
  names.push(...page.sandboxes.map((s) => s.name));
}
results.list = {
  pages, names,
  tagged: (await (await Sandbox.list({ ...creds, tags: { suite: "js" } })).toArray()).map((s) => s.name).sort(),
};

lap("list");
// Get, stop (a persistent sandbox is snapshotted), resume.
results.get = { name: (await Sandbox.get({ ...creds, name: "js-c" })).name };
const stopped = await a.stop();
results.stop = { status: stopped.status, snapshot: stopped.snapshot?.id ?? null };
const resumed = await Sandbox.get({ ...creds, name: "js-a", resume: true });
results.resume = {
  status: resumed.status,
  kept: (await (await resumed.runCommand("cat", ["dir/a.txt"])).stdout()),
  sessions: (await (await resumed.listSessions()).toArray()).length,
};

lap("stop");
// Delete, not-found errors.
await b.delete();
results.notFound = {
  deleted: await status(Sandbox.get({ ...creds, name: "js-b" })),
  never: await status(Sandbox.get({ ...creds, name: "js-never" })),
  command: await status(resumed.getCommand("cmd_nope")),
  snapshot: await status(Snapshot.get({ ...creds, snapshotId: "snap_nope" })),
};
const snapObj = await Snapshot.get({ ...creds, snapshotId: snap.snapshotId });
await snapObj.delete();
results.snapshotDeleted = (await Snapshot.get({ ...creds, snapshotId: snap.snapshotId })).status;

for (const n of ["js-a", "js-c", "js-d"]) await (await Sandbox.get({ ...creds, name: n })).delete();
results.left = (await (await Sandbox.list({ ...creds })).toArray()).length;

lap("delete");
process.stderr.write(`timings (ms since start): ${JSON.stringify(timings)}\n`);
process.stdout.write(JSON.stringify(results) + "\n");
