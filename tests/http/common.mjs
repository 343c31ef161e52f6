// common.mjs: shared helpers of the daemon's integration tests: a tiny
// assertion counter, the pinned OpenAI schemas compiled with ajv, raw HTTP
// requests, and a PNG encoder (node's zlib) for image tests.
import { createRequire } from 'node:module';
import net from 'node:net';
import zlib from 'node:zlib';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(process.env.NODE_DEPS_DIR ? path.join(process.env.NODE_DEPS_DIR, 'x.js') : import.meta.url);
export const OpenAI = require('openai').default ?? require('openai');
const Ajv = require('ajv').default ?? require('ajv');

export const base = process.env.MMD_URL;        // http://127.0.0.1:PORT
export const apiKey = process.env.MMD_KEY;
export const model = process.env.MMD_MODEL;
const [host, port] = new URL(base).host.split(':');
export const HOST = host;
export const PORT = Number(port);

let passed = 0;
const failures = [];
export function check(cond, name, detail) {
  if (cond) passed++;
  else {
    failures.push(name);
    console.log(`FAIL: ${name}${detail !== undefined ? ': ' + (typeof detail === 'string' ? detail : JSON.stringify(detail)).slice(0, 600) : ''}`);
  }
  return cond;
}
export function finish(suite) {
  console.log(`${suite}: ${passed} checks passed, ${failures.length} failed`);
  process.exit(failures.length ? 1 : 0);
}

// ---- schemas ---------------------------------------------------------------------
const schemaDoc = JSON.parse(fs.readFileSync(path.join(here, 'openai-schemas.json'), 'utf8'));
const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false });
ajv.addSchema({ $id: 'openai', $defs: schemaDoc.$defs });
const validators = {};
export function validate(def, obj, name) {
  validators[def] ??= ajv.getSchema(`openai#/$defs/${def}`);
  const ok = validators[def](obj);
  return check(ok, `${name}: matches ${def}`, ok ? undefined : { errors: validators[def].errors, obj });
}

// ---- HTTP --------------------------------------------------------------------------
export function auth(extra = {}) {
  return { Authorization: `Bearer ${apiKey}`, 'Content-Type': 'application/json', ...extra };
}
// fetch, retried once when the connection fails before any answer: the
// client's pooled keep-alive connection may just have been closed by the
// server's connection_timeout (the abuse daemon's is 2 s), a race every
// HTTP client has to live with.
async function fetch1(url, init) {
  try {
    return await fetch(url, init);
  } catch {
    await sleep(50);
    return fetch(url, init);
  }
}
export async function post(p, body, headers = auth()) {
  const r = await fetch1(base + p, { method: 'POST', headers, body: typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body) });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}
export async function get(p, headers = auth()) {
  const r = await fetch1(base + p, { headers });
  const text = await r.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: r.status, headers: r.headers, text, json };
}
export async function healthy() {
  try { return (await fetch1(base + '/health')).status === 200; } catch { return false; }
}
// Sends raw bytes on a fresh connection; resolves with what came back before
// the server closed (or timeout_ms passed).
export function raw(bytes, { timeout_ms = 5000, chunks = null, gap_ms = 0 } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(PORT, HOST);
    let data = '';
    let closed = false;
    const t = setTimeout(() => { s.destroy(); resolve({ data, closed, timedOut: true }); }, timeout_ms);
    s.on('data', (d) => { data += d.toString('latin1'); });
    s.on('error', () => {});
    s.on('close', () => { closed = true; clearTimeout(t); resolve({ data, closed, timedOut: false }); });
    s.on('connect', async () => {
      if (!chunks) { s.write(bytes); return; }
      for (const c of chunks) {
        if (s.destroyed) return;
        s.write(c);
        if (gap_ms) await new Promise((r) => setTimeout(r, gap_ms));
      }
    });
  });
}
export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export async function metric(name) {
  const r = await get('/metrics');
  const line = r.text.split('\n').find((l) => l.startsWith(name + '{'));
  return line ? Number(line.split(' ').pop()) : NaN;
}

// ---- images ----------------------------------------------------------------------
const crcTable = new Int32Array(256).map((_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c;
});
function crc32(buf) {
  let c = -1;
  for (const b of buf) c = crcTable[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ -1) >>> 0;
}
function chunk(type, data) {
  const len = Buffer.alloc(4); len.writeUInt32BE(data.length);
  const td = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  const crc = Buffer.alloc(4); crc.writeUInt32BE(crc32(td));
  return Buffer.concat([len, td, crc]);
}
// An 8-bit RGB PNG; pixel(x, y) -> [r, g, b]. ihdrSize overrides the header's
// dimensions (a lying image).
export function png(width, height, pixel, ihdrSize = null) {
  const rows = [];
  for (let y = 0; y < height; y++) {
    const row = Buffer.alloc(1 + 3 * width);
    for (let x = 0; x < width; x++) row.set(pixel(x, y), 1 + 3 * x);
    rows.push(row);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(ihdrSize ? ihdrSize[0] : width, 0);
  ihdr.writeUInt32BE(ihdrSize ? ihdrSize[1] : height, 4);
  ihdr[8] = 8; ihdr[9] = 2;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
    chunk('IDAT', zlib.deflateSync(Buffer.concat(rows), { level: 9 })), chunk('IEND', Buffer.alloc(0))]);
}
// A valid PNG of w x h zero pixels whose IDAT is built row by row without
// holding the whole image (a decompression bomb: tiny file, huge image).
export function bombPng(w, h) {
  const z = zlib.createDeflate({ level: 9 });
  const parts = [];
  z.on('data', (d) => parts.push(d));
  const row = Buffer.alloc(1 + 3 * w);
  for (let y = 0; y < h; y++) z.write(row);
  return new Promise((resolve) => {
    z.end(() => {
      const ihdr = Buffer.alloc(13);
      ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = 8; ihdr[9] = 2;
      resolve(Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr),
        chunk('IDAT', Buffer.concat(parts)), chunk('IEND', Buffer.alloc(0))]));
    });
  });
}
export const dataUrl = (buf, type = 'image/png') => `data:${type};base64,${buf.toString('base64')}`;
