// Drives Modal's official JavaScript SDK (modal, pinned by
// package-lock.json) against modalfake through every operation the fake
// claims. Run by jsclient_test.go with MODAL_SERVER_URL and the fake's
// credentials in the environment, and PROBE_PORT, a loopback port that
// accepts connections. Prints one JSON object of results on stdout, which
// the Go test checks; any error the SDK throws ends the script with a
// non-zero exit and the stack on stderr.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

// Two packaging bugs of the SDK (modal 0.7.0), not of the fake, need a
// work-around here:
//  - its ES module build cannot load gRPC on Node ("Dynamic require of
//    \"process\" is not supported"), so the script loads its CommonJS build;
//  - it builds the command router's channel credentials with the copy of
//    @grpc/grpc-js bundled into it (1.13.3) but creates the channel with
//    nice-grpc, which checks them against its own @grpc/grpc-js
//    ("Channel credentials must be a ChannelCredentials object"). The
//    wrapper below hands nice-grpc the same credentials (insecure or TLS)
//    built by its own copy; nothing else changes.
const grpc = require("@grpc/grpc-js");
const niceChannel = require("nice-grpc/lib/client/channel");
const createChannel = niceChannel.createChannel;
niceChannel.createChannel = (address, credentials, options) => {
  if (credentials && !(credentials instanceof grpc.ChannelCredentials)) {
    credentials = credentials._isSecure() ? grpc.credentials.createSsl() : grpc.credentials.createInsecure();
  }
  return createChannel(address, credentials, options);
};
const { ModalClient, NotFoundError, SandboxTimeoutError } = require("modal");

if (!process.env.MODAL_SERVER_URL?.startsWith("http://127.0.0.1:")) {
  throw new Error("MODAL_SERVER_URL must point at the fake on loopback");
}
const probePort = process.env.PROBE_PORT;
const t0 = Date.now();
const timings = {};
const lap = (what) => { timings[what] = Date.now() - t0; };
const results = {};
const client = new ModalClient();
async function errorName(promise) {
  try {
    await promise;
    return "ok";
  } catch (err) {
    return err.constructor.name;
  }
}
async function run(sb, argv, params) {
  const p = await sb.exec(argv, params);
  const [stdout, stderr] = await Promise.all([p.stdout.readText(), p.stderr.readText()]);
  return { stdout, stderr, code: await p.wait() };
}

// Create (registry image, env, tags, ports, workdir, name).
const app = await client.apps.fromName("js-battery", { createIfMissing: true });
const image = client.images.fromRegistry("alpine:3.21");
const sb = await client.sandboxes.create(app, image, {
  env: { GREETING: "hi" }, encryptedPorts: [8080], workdir: "/w1", name: "js-a", timeoutMs: 600000,
});
await sb.setTags({ suite: "js", which: "a" });
results.create = { id: sb.sandboxId, tags: await sb.getTags() };
lap("create");

// Exec: streams, exit code, env, workdir, stdin.
results.exec = await run(sb, ["sh", "-c", "echo out; echo $GREETING $X >&2; pwd >&2; exit 3"], { env: { X: "x" } });
const cat = await sb.exec(["sh", "-c", "tr a-z A-Z; echo done >&2"]);
await cat.stdin.writeText("from stdin\n");
await cat.stdin.close();
results.stdin = { stdout: await cat.stdout.readText(), stderr: await cat.stderr.readText(), code: await cat.wait() };
results.binary = [...(await (await sb.exec(["printf", "\\000\\377"], { mode: "binary" })).stdout.readBytes())];
results.workdirOption = (await run(sb, ["pwd"], { workdir: "/tmp" })).stdout;
results.missing = (await run(sb, ["no-such-program-xyz"])).code;
// No signal API: a command ends at its timeout.
const slow = await sb.exec(["sleep", "60"], { timeoutMs: 1000 });
results.timeout = await slow.wait().then((c) => c, (e) => e.constructor.name);
lap("exec");

// Files.
const w = await sb.open("/tmp/a.bin", "w");
await w.write(new Uint8Array([0, 255, 1, 10]));
await w.close();
const r = await sb.open("/tmp/a.bin", "r");
results.files = { read: [...(await r.read())] };
await r.close();
results.files.missing = await errorName(sb.open("/no/such/file", "r"));
results.files.directory = await errorName(sb.open("/tmp", "r"));
const rel = await sb.open("rel.txt", "w");
await rel.write(new TextEncoder().encode("relative"));
await rel.close();
results.files.relative = (await run(sb, ["cat", "/w1/rel.txt"])).stdout;
lap("files");

// Tunnels.
const tunnels = await sb.tunnels(10000);
results.tunnels = Object.fromEntries(Object.entries(tunnels).map(([port, t]) => [port, { host: t.host, hasPort: t.port > 0 }]));
lap("tunnels");

// Network policy: blocked and allowlisted sandboxes reach nothing, the
// default one reaches the probe port on loopback.
const reach = async (box) => (await run(box, ["bash", "-c", `exec 3<>/dev/tcp/127.0.0.1/${probePort}`])).code === 0;
const blocked = await client.sandboxes.create(app, image, { blockNetwork: true });
const allowlisted = await client.sandboxes.create(app, image, { cidrAllowlist: ["10.0.0.0/8"] });
results.network = { open: await reach(sb), blocked: await reach(blocked), allowlisted: await reach(allowlisted) };
lap("network");

// Snapshot, create from it.
await run(sb, ["sh", "-c", "echo kept > /tmp/state.txt"]);
const snap = await sb.snapshotFilesystem(10000);
const fromSnap = await client.sandboxes.create(app, await client.images.fromId(snap.imageId));
results.snapshot = { imageId: snap.imageId, restored: (await run(fromSnap, ["cat", "/tmp/state.txt"])).stdout };
lap("snapshot");

// Entrypoint command: the sandbox ends with it.
const ep = await client.sandboxes.create(app, image, { command: ["sh", "-c", "exit 5"] });
results.entrypoint = { wait: await ep.wait(), poll: await ep.poll() };
lap("entrypoint");

// List with pagination (the fake pages a few at a time), by tags; get by
// id and by name.
await fromSnap.setTags({ suite: "js", which: "b" });
const all = [];
for await (const s of client.sandboxes.list({ appId: app.appId })) all.push(s.sandboxId);
const tagged = [];
for await (const s of client.sandboxes.list({ appId: app.appId, tags: { suite: "js" } })) tagged.push(s.sandboxId);
results.list = {
  count: all.length, unique: new Set(all).size, hasA: all.includes(sb.sandboxId),
  tagged: tagged.length, taggedHasA: tagged.includes(sb.sandboxId), taggedHasB: tagged.includes(fromSnap.sandboxId),
};
results.get = {
  byId: (await client.sandboxes.fromId(sb.sandboxId)).sandboxId === sb.sandboxId,
  byName: (await client.sandboxes.fromName("js-battery", "js-a")).sandboxId === sb.sandboxId,
  poll: await sb.poll(),
};
lap("list");

// Terminate (delete), then not-found and finished errors.
const code = await sb.terminate({ wait: true });
results.terminate = {
  code,
  poll: await (await client.sandboxes.fromId(sb.sandboxId)).poll(),
  execAfter: await errorName((await client.sandboxes.fromId(sb.sandboxId)).exec(["true"])),
};
results.notFound = {
  id: await errorName(client.sandboxes.fromId("sb-nope")),
  name: await errorName(client.sandboxes.fromName("js-battery", "js-nope")),
  image: await errorName(client.images.fromId("im-nope")),
};
for (const box of [blocked, allowlisted, fromSnap]) await box.terminate();
lap("terminate");
client.close();

results.errorClasses = { NotFoundError: NotFoundError.name, SandboxTimeoutError: SandboxTimeoutError.name };
process.stderr.write(`timings (ms since start): ${JSON.stringify(timings)}\n`);
process.stdout.write(JSON.stringify(results) + "\n");
