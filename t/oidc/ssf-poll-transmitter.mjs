// A Shared Signals transmitter's poll endpoint (RFC 8936) for the tests
// (t/222): node ssf-poll-transmitter.mjs PORT BEARER_FILE STATE_FILE
//
// POST /poll      a receiver's poll: `Authorization: Bearer` must be the
//                 token in BEARER_FILE (else 401 with an RFC 8935 error
//                 object); its `ack` and `setErrs` are recorded and take
//                 those SETs off the queue; the answer carries up to
//                 `maxEvents` of the queued SETs (`sets`: jti -> SET) and
//                 `moreAvailable`. With `returnImmediately: false` and an
//                 empty queue it waits up to 2 s for a SET.
// POST /_queue    {"sets": {jti: SET, ...}}: queued, in that order.
// POST /_mode     {"mode": M}: how the polls are answered from now on:
//                 "normal", "garbage" (200, not JSON), "huge" (200, a poll
//                 answer of 64 KiB), "error" (503).
// GET  /_state    what was seen: the polls' bodies, the times each jti was
//                 acknowledged, the setErrs, the queue's jtis (each poll
//                 with its Content-Type and the X-Worker header it had).
//
// The state is also written to STATE_FILE after every change, so that a
// transmitter started again (after the test stopped it) keeps it.

import { createServer } from 'node:http';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';

const [port, bearerFile, stateFile] = process.argv.slice(2);
const bearer = readFileSync(bearerFile, 'utf8').trim();
const state = existsSync(stateFile)
  ? JSON.parse(readFileSync(stateFile, 'utf8'))
  : { polls: [], acks: {}, errs: {}, queue: [], mode: 'normal' };
const save = () => writeFileSync(stateFile, JSON.stringify(state));

const read = (req) => new Promise((resolve) => {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
});
const send = (res, status, value) => {
  const body = JSON.stringify(value);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

createServer(async (req, res) => {
  const body = await read(req);
  if (req.method === 'GET' && req.url === '/_state') return send(res, 200, state);
  if (req.method === 'POST' && req.url === '/_queue') {
    for (const [jti, set] of Object.entries(JSON.parse(body).sets)) state.queue.push({ jti, set });
    save();
    return send(res, 200, { queued: state.queue.length });
  }
  if (req.method === 'POST' && req.url === '/_mode') {
    state.mode = JSON.parse(body).mode;
    save();
    return send(res, 200, { mode: state.mode });
  }
  if (req.method !== 'POST' || req.url !== '/poll') return send(res, 404, {});
  if (req.headers.authorization !== `Bearer ${bearer}`) {
    state.polls.push({ refused: true });
    save();
    return send(res, 401, { err: 'authentication_failed', description: 'wrong bearer token' });
  }
  let poll;
  try {
    poll = JSON.parse(body);
  } catch {
    return send(res, 400, { err: 'invalid_request', description: 'not JSON' });
  }
  state.polls.push({ ...poll, contentType: req.headers['content-type'], worker: req.headers['x-worker'], mode: state.mode });
  if (state.mode === 'garbage') {
    save();
    res.writeHead(200, { 'Content-Type': 'application/json' });
    return res.end('this is not a poll answer');
  }
  if (state.mode === 'huge') {
    save();
    return send(res, 200, { sets: {}, padding: 'x'.repeat(65536) });
  }
  if (state.mode === 'error') {
    save();
    return send(res, 503, { err: 'unavailable' });
  }
  const done = new Set();
  for (const jti of poll.ack ?? []) {
    state.acks[jti] = (state.acks[jti] ?? 0) + 1;
    done.add(jti);
  }
  for (const [jti, err] of Object.entries(poll.setErrs ?? {})) {
    state.errs[jti] = err;
    done.add(jti);
  }
  state.queue = state.queue.filter((q) => !done.has(q.jti));
  save();
  if (poll.returnImmediately === false) {
    for (let waited = 0; state.queue.length === 0 && waited < 2000; waited += 50) await sleep(50);
  }
  const max = poll.maxEvents ?? 100;
  const sets = Object.fromEntries(state.queue.slice(0, max).map((q) => [q.jti, q.set]));
  send(res, 200, { sets, moreAvailable: state.queue.length > max });
}).listen(Number(port), '127.0.0.1');
