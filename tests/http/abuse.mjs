// abuse.mjs: every kind of bad input gets its 4xx (with the OpenAI error
// shape and the right `param`), hostile connections (slowloris trickling,
// header floods, a burst of 400 requests against a small queue, clients that
// vanish mid-stream) are dealt with, and after each the daemon still serves.
// The daemon under test runs with small limits (check_daemon.sh): max_queue
// 8, max_seqs 2, max_body_bytes 1m, max_prompt_bytes 64k, max_model_len 4096,
// max_images 3, connection_timeout 2.
import { base, apiKey, model, check, validate, finish, post, get, raw, healthy, sleep, metric,
  png, bombPng, dataUrl, auth, HOST, PORT } from './common.mjs';
import net from 'node:net';

const chat = (extra) => ({ model, messages: [{ role: 'user', content: 'Hi' }], max_tokens: 2, ...extra });
const userImage = (url) => ({ model, max_tokens: 2, messages: [{ role: 'user', content: [
  { type: 'image_url', image_url: { url } }, { type: 'text', text: 'What?' }] }] });

async function expectError(name, path, body, status, param, opts = {}) {
  const r = await post(path, body, opts.headers ?? auth());
  const ok = check(r.status === status, `${name}: status ${status}`, { got: r.status, body: r.text.slice(0, 300) });
  if (ok && r.json) {
    validate('ErrorResponse', r.json, name);
    if (param !== undefined)
      check(r.json.error.param === param, `${name}: param ${param}`, r.json.error);
    if (opts.code)
      check(r.json.error.code === opts.code, `${name}: code ${opts.code}`, r.json.error);
    if (opts.message)
      check(r.json.error.message.includes(opts.message), `${name}: message mentions "${opts.message}"`, r.json.error.message);
  }
  check(await healthy(), `${name}: still serving`);
  return r;
}

const C = '/v1/chat/completions';
// ---- bodies that are not JSON objects ------------------------------------------------------
await expectError('invalid UTF-8', C, new Uint8Array([0x7b, 0x22, 0xff, 0xfe, 0x22, 0x7d]), 400, null, { code: 'invalid_utf8' });
await expectError('overlong UTF-8', C, new Uint8Array([...Buffer.from('{"model":"'), 0xc0, 0xaf, ...Buffer.from('"}')]), 400, null);
await expectError('not JSON', C, '{"messages": [', 400, null, { code: 'invalid_json' });
await expectError('JSON array', C, '[1,2]', 400, null);
await expectError('trailing data', C, JSON.stringify(chat()) + ' x', 400, null);
await expectError('empty body', C, '', 400, null);
await expectError('deep nesting', C, '['.repeat(100000), 400, null);
// ---- messages ------------------------------------------------------------------------------
await expectError('no messages', C, { model }, 400, 'messages');
await expectError('messages not an array', C, { model, messages: 'hi' }, 400, 'messages');
await expectError('empty messages', C, { model, messages: [] }, 400, 'messages');
await expectError('message not an object', C, { model, messages: [3] }, 400, 'messages[0]');
await expectError('unknown role', C, { model, messages: [{ role: 'wizard', content: 'x' }] }, 400, 'messages[0].role');
await expectError('tool role', C, { model, messages: [{ role: 'tool', content: 'x' }] }, 400, 'messages[0].role');
await expectError('role not a string', C, { model, messages: [{ role: 1, content: 'x' }] }, 400, 'messages[0].role');
await expectError('missing content', C, { model, messages: [{ role: 'user' }] }, 400, 'messages[0].content');
await expectError('content a number', C, { model, messages: [{ role: 'user', content: 5 }] }, 400, 'messages[0].content');
await expectError('empty parts', C, { model, messages: [{ role: 'user', content: [] }] }, 400, 'messages[0].content');
await expectError('unknown part type', C, { model, messages: [{ role: 'user', content: [{ type: 'input_audio' }] }] }, 400, 'messages[0].content[0]');
await expectError('text part without text', C, { model, messages: [{ role: 'user', content: [{ type: 'text', text: 3 }] }] }, 400, 'messages[0].content[0]');
await expectError('second message bad', C, { model, messages: [{ role: 'user', content: 'a' }, { role: 'user', content: null }] }, 400, 'messages[1].content');
await expectError('tools', C, chat({ tools: [{ type: 'function', function: { name: 'f' } }] }), 400, 'tools');
await expectError('json response_format', C, chat({ response_format: { type: 'json_object' } }), 400, 'response_format');
// logit_bias would be ignored (the sampler has no bias list): refused, never silently dropped
await expectError('logit_bias', C, chat({ logit_bias: { 50: -100 } }), 400, 'logit_bias', { code: 'unsupported_parameter' });
await expectError('logit_bias on completions', '/v1/completions', { model, prompt: 'a', max_tokens: 2, logit_bias: { 50: 100 } }, 400, 'logit_bias', { code: 'unsupported_parameter' });
await expectError('logit_bias on responses', '/v1/responses', { model, input: 'a', max_output_tokens: 2, logit_bias: { 50: 100 } }, 400, 'logit_bias', { code: 'unsupported_parameter' });
await expectError('logit_bias not an object', C, chat({ logit_bias: [1] }), 400, 'logit_bias');
for (const [name, path, b] of [['chat', C, chat({ logit_bias: {} })], ['completions', '/v1/completions', { model, prompt: 'a', max_tokens: 2, logit_bias: null }]]) {
  const r = await post(path, b);
  check(r.status === 200, `an empty or null logit_bias is accepted (${name})`, r.text.slice(0, 200));
}
// ---- numbers and types -------------------------------------------------------------------------
for (const [field, value] of [['temperature', 'hot'], ['temperature', -1], ['temperature', 1e308], ['top_p', 2], ['top_p', 0],
  ['top_k', -5], ['min_p', 1.5], ['n', 0], ['n', 1e9], ['n', 2.5], ['max_tokens', -5], ['max_tokens', 0], ['max_tokens', 1.5],
  ['max_tokens', '10'], ['max_completion_tokens', -1], ['presence_penalty', 3], ['frequency_penalty', -9],
  ['repetition_penalty', 0], ['seed', 1e300], ['seed', 'x'], ['logprobs', 'yes'], ['top_logprobs', 50], ['stream', 'yes'],
  ['stop', 123], ['stop', [1, 2]], ['stop', ''], ['stop', Array(20).fill('x')], ['user', 5], ['stream_options', 3]])
  await expectError(`${field}=${JSON.stringify(value).slice(0, 20)}`, C, chat({ [field]: value }), 400, field);
await expectError('top_logprobs without logprobs', C, chat({ top_logprobs: 2 }), 400, 'top_logprobs');
await expectError('stream_options without stream', C, chat({ stream_options: { include_usage: true } }), 400, 'stream_options');
await expectError('unknown model', C, chat({ model: 'gpt-9' }), 404, 'model', { code: 'model_not_found' });
await expectError('model not a string', C, chat({ model: 7 }), 400, 'model');
// ---- sizes and context --------------------------------------------------------------------------
await expectError('prompt beyond the context', C, { model, messages: [{ role: 'user', content: 'red green blue '.repeat(2000) }] }, 400, 'messages', { code: 'context_length_exceeded' });
await expectError('max_tokens beyond the context', C, chat({ max_tokens: 100000 }), 400, 'max_tokens');
await expectError('text beyond max_prompt_bytes', C, { model, messages: [{ role: 'user', content: 'x'.repeat(70000) }] }, 413, 'messages', { code: 'prompt_too_large' });
{
  // the body is refused from Content-Length, before any of it is sent
  const r = await raw(`POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n`, { timeout_ms: 3000 });
  check(r.data.startsWith('HTTP/1.1 413'), '413 from Content-Length without reading the body', r.data.slice(0, 100));
  const chunked = Buffer.concat([Buffer.from(`POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nTransfer-Encoding: chunked\r\n\r\n`),
    ...Array.from({ length: 20 }, () => Buffer.from(`10000\r\n${'x'.repeat(0x10000)}\r\n`)), Buffer.from('0\r\n\r\n')]);
  const rc = await raw(chunked, { timeout_ms: 5000 });
  check(rc.data.startsWith('HTTP/1.1 413'), 'a chunked body over the limit is 413', rc.data.slice(0, 100));
  // an endless chunked body is cut: the connection closes after twice the limit
  const endless = await new Promise((resolve) => {
    const s = net.connect(PORT, HOST, () => {
      s.write(`POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nTransfer-Encoding: chunked\r\n\r\n`);
      const piece = Buffer.from(`10000\r\n${'y'.repeat(0x10000)}\r\n`);
      let sent = 0;
      const pump = () => { while (!s.destroyed && sent < 64 << 20 && s.write(piece)) sent += piece.length; };
      s.on('drain', pump);
      pump();
      s.on('close', () => resolve(sent));
    });
    s.on('error', () => {});
    setTimeout(() => { s.destroy(); resolve(-1); }, 20000);
  });
  check(endless > 0 && endless < 16 << 20, 'an endless chunked body is cut after about twice the limit', endless);
  check(await healthy(), 'still serving after big bodies');
}
// ---- images ------------------------------------------------------------------------------------------
await expectError('bad base64', C, userImage('data:image/png;base64,@@@notbase64@@@'), 400, 'messages[0].content[0].image_url');
await expectError('remote URL', C, userImage('https://example.com/cat.png'), 400, 'messages[0].content[0].image_url', { message: 'data:' });
await expectError('file URL not allowed', C, userImage('file:///etc/passwd'), 400, 'messages[0].content[0].image_url');
await expectError('ftp URL', C, userImage('ftp://x/y.png'), 400, 'messages[0].content[0].image_url');
await expectError('image_url not an object', C, { model, messages: [{ role: 'user', content: [{ type: 'image_url', image_url: 5 }] }] }, 400, 'messages[0].content[0]');
const good = png(32, 32, () => [200, 10, 10]);
await expectError('corrupt PNG', C, userImage(dataUrl(Buffer.concat([good.subarray(0, 40), Buffer.alloc(200, 7)]))), 400, 'messages[0].content[0].image_url');
await expectError('truncated PNG', C, userImage(dataUrl(good.subarray(0, good.length - 30))), 400, 'messages[0].content[0].image_url');
await expectError('not an image', C, userImage(dataUrl(Buffer.from('GIF89a............'), 'image/gif')), 400, 'messages[0].content[0].image_url');
await expectError('lying dimensions', C, userImage(dataUrl(png(8, 8, () => [1, 2, 3], [60000, 60000]))), 413, 'messages[0].content[0].image_url');
await expectError('decompression bomb', C, userImage(dataUrl(await bombPng(6000, 6000))), 413, 'messages[0].content[0].image_url');
await expectError('image in a system message', C, { model, messages: [{ role: 'system', content: [{ type: 'image_url', image_url: { url: dataUrl(good) } }] }, { role: 'user', content: 'x' }] }, 400, 'messages[0].content[0]');
await expectError('too many images', C, { model, messages: [{ role: 'user', content: Array(4).fill({ type: 'image_url', image_url: { url: dataUrl(good) } }) }] }, 400, 'messages[0].content[3]');
{
  // a client that leaves while its large image is being decoded (on a worker thread)
  const big = JSON.stringify(userImage(dataUrl(png(4000, 3000, () => [30, 120, 200]))));
  await new Promise((resolve) => {
    const s = net.connect(PORT, HOST, () => {
      s.write(`POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nContent-Length: ${Buffer.byteLength(big)}\r\n\r\n${big}`, () => {
        setTimeout(() => { s.destroy(); resolve(); }, 20);
      });
    });
    s.on('error', () => resolve());
  });
  const t0 = Date.now();
  check(await healthy(), 'serving while a left-behind image is decoded', Date.now() - t0);
  const r = await post(C, userImage(dataUrl(png(4000, 3000, () => [30, 120, 200]))));
  check(r.status === 200 && r.json.usage.prompt_tokens > 256 * 12, 'a 4000x3000 photo-sized image is tiled (13 tiles)', r.json?.usage ?? r.text.slice(0, 200));
}
// ---- completions, tokenize, detokenize -------------------------------------------------------------------
const P = '/v1/completions';
await expectError('no prompt', P, { model }, 400, 'prompt');
await expectError('prompt a number', P, { model, prompt: 5 }, 400, 'prompt');
await expectError('empty token prompt', P, { model, prompt: [] }, 400, 'prompt');
await expectError('token id out of vocabulary', P, { model, prompt: [1, 99999999] }, 400, 'prompt');
await expectError('negative token id', P, { model, prompt: [1, -3] }, 400, 'prompt');
await expectError('fractional token id', P, { model, prompt: [1, 2.5] }, 400, 'prompt');
await expectError('mixed prompt array', P, { model, prompt: ['a', [1, 2]] }, 400, 'prompt[1]');
await expectError('too many prompts', P, { model, prompt: Array(65).fill('a') }, 400, 'prompt');
await expectError('token prompt beyond the context', P, { model, prompt: Array(5000).fill(5) }, 400, 'prompt');
await expectError('echo', P, { model, prompt: 'a', echo: true }, 400, 'echo');
await expectError('logprobs too many', P, { model, prompt: 'a', logprobs: 99 }, 400, 'logprobs');
await expectError('tokenize nothing', '/tokenize', { model }, 400, 'prompt');
await expectError('detokenize bad id', '/detokenize', { model, tokens: [1, 1e12] }, 400, 'tokens');
await expectError('detokenize not array', '/detokenize', { model, tokens: 'abc' }, 400, 'tokens');
// ---- routes, methods, auth ----------------------------------------------------------------------------
await expectError('unknown route', '/v1/embeddings', {}, 404, null);
{
  const r = await get('/v1/chat/completions');
  check(r.status === 405 && r.json?.error && r.headers.get('allow') === 'POST', 'GET on a POST route is 405 with Allow', r.status);
  const noKey = await post(C, chat(), { 'Content-Type': 'application/json' });
  check(noKey.status === 401 && noKey.json?.error?.code === 'invalid_api_key', 'no key: 401', noKey.status);
  const wrongKey = await post(C, chat(), { Authorization: `Bearer ${apiKey}x` });
  check(wrongKey.status === 401, 'wrong key: 401', wrongKey.status);
  const prefixKey = await post(C, chat(), { Authorization: `Bearer ${apiKey.slice(0, -1)}` });
  check(prefixKey.status === 401, 'a key prefix: 401', prefixKey.status);
  const h = await fetch(base + '/health');
  check(h.status === 200, '/health needs no key');
  const m = await get('/metrics', {});
  check(m.status === 401, '/metrics needs the key', m.status);
}
// ---- slowloris --------------------------------------------------------------------------------------------
{
  const req = `POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nContent-Length: 20\r\n`;
  const trickle = Array.from({ length: 40 }, () => raw('', { chunks: [...req], gap_ms: 150, timeout_ms: 15000 }));
  await sleep(500);
  const t0 = Date.now();
  const r = await post(C, chat());
  check(r.status === 200 && Date.now() - t0 < 10000, 'served while 40 connections trickle headers', { status: r.status, ms: Date.now() - t0 });
  // a connection that goes quiet is closed after connection_timeout (2 s)
  const quiet = await raw(`POST ${C} HTTP/1.1\r\nHost: x\r\nContent-Len`, { timeout_ms: 8000 });
  check(quiet.closed && !quiet.timedOut, 'a silent half-sent request is closed by the server', quiet);
  const body = await raw(`POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nContent-Length: 100\r\n\r\n{"mod`, { timeout_ms: 8000 });
  check(body.closed && !body.timedOut, 'a stalled body is closed by the server', body);
  await Promise.all(trickle);
  check(await healthy(), 'still serving after slowloris');
}
// ---- header floods ----------------------------------------------------------------------------------------
{
  const many = `GET /health HTTP/1.1\r\nHost: x\r\n${Array.from({ length: 3000 }, (_, i) => `X-Flood-${i}: ${'a'.repeat(40)}\r\n`).join('')}\r\n`;
  const r = await raw(many, { timeout_ms: 5000 });
  check(/^HTTP\/1\.1 4(31|13|00)/.test(r.data) || (r.closed && r.data === ''), 'a header flood is refused (431) or cut', r.data.slice(0, 60));
  const long = `GET /health HTTP/1.1\r\nHost: x\r\nX-Long: ${'b'.repeat(200000)}\r\n\r\n`;
  const r2 = await raw(long, { timeout_ms: 5000 });
  check(/^HTTP\/1\.1 4(31|13|00)/.test(r2.data) || (r2.closed && r2.data === ''), 'a 200 KB header is refused or cut', r2.data.slice(0, 60));
  const idle = await Promise.all(Array.from({ length: 200 }, () => new Promise((res) => {
    const s = net.connect(PORT, HOST, () => res(s));
    s.on('error', () => res(s));
  })));
  check(await healthy(), 'serving with 200 idle connections open');
  idle.forEach((s) => s.destroy());
  check(await healthy(), 'still serving after header floods');
}
// ---- a burst of 400 requests against a queue of 8 ------------------------------------------------------------
{
  const results = await Promise.all(Array.from({ length: 400 }, () =>
    fetch(base + C, { method: 'POST', headers: auth(), body: JSON.stringify(chat({ max_tokens: 4 })) })
      .then(async (r) => ({ status: r.status, retry: r.headers.get('retry-after'), body: await r.text() }))
      .catch((e) => ({ status: 0, err: String(e) }))));
  const counts = {};
  for (const r of results) counts[r.status] = (counts[r.status] || 0) + 1;
  check(Object.keys(counts).every((s) => ['200', '429', '503'].includes(s)), 'burst: only 200/429/503', counts);
  check((counts[200] || 0) >= 8 && (counts[429] || 0) >= 1, 'burst: some served, the overflow refused', counts);
  check(results.filter((r) => r.status === 429).every((r) => r.retry && JSON.parse(r.body).error.code === 'queue_full'),
    'every 429 has Retry-After and an error object');
  check(await healthy(), 'still serving after the burst');
}
// ---- a stream waiting for a slot gets `: ping` comments ---------------------------------------
{
  const busy = [];
  const open = (max_tokens) => new Promise((res) => {
    const s = net.connect(PORT, HOST, () => {
      const body = JSON.stringify(chat({ max_tokens, stream: true, ignore_eos: true }));
      s.write(`POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    let got = '';
    s.on('data', (d) => { got += d; if (got.includes('data: {')) res(s); });
    s.on('error', () => res(s));
    busy.push(s);
    s.text = () => got;
  });
  await open(4000); // both slots (max_seqs 2) busy...
  await open(4000);
  const waiting = net.connect(PORT, HOST, () => {
    const body = JSON.stringify(chat({ max_tokens: 4, stream: true }));
    waiting.write(`POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  });
  let w = '';
  waiting.on('data', (d) => { w += d; });
  waiting.on('error', () => {});
  await sleep(500);
  check(/\r\n: ping\n\n/.test(w) || w.includes(': ping\n\n'), 'a queued stream gets `: ping` (ping_interval 100 ms)', w.slice(0, 300));
  check(!w.includes('data: {'), 'the queued stream has not started', w.slice(0, 300));
  busy.forEach((s) => s.destroy());
  const t0 = Date.now();
  while (!w.includes('data: [DONE]') && Date.now() - t0 < 10000) await sleep(50);
  check(w.includes('data: [DONE]'), 'it runs once the slots are freed', w.slice(-300));
  waiting.destroy();
}
// ---- clients that vanish -----------------------------------------------------------------------------------
{
  const streams = Array.from({ length: 6 }, () => new Promise((res) => {
    const s = net.connect(PORT, HOST, () => {
      const body = JSON.stringify(chat({ max_tokens: 4000, stream: true, ignore_eos: true }));
      s.write(`POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
    });
    let got = '';
    s.on('data', (d) => {
      got += d;
      if (got.includes('data: {')) { s.destroy(); res(true); } // first chunk, then gone
    });
    s.on('error', () => res(false));
    setTimeout(() => { s.destroy(); res(got.length > 0); }, 20000);
  }));
  check((await Promise.all(streams)).every(Boolean), 'streams started before the clients vanished');
  // buffered requests whose client leaves
  const buffered = Array.from({ length: 3 }, () => new Promise((res) => {
    const s = net.connect(PORT, HOST, () => {
      const body = JSON.stringify(chat({ max_tokens: 4000, ignore_eos: true }));
      s.write(`POST ${C} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${apiKey}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
      setTimeout(() => { s.destroy(); res(); }, 300);
    });
    s.on('error', () => res());
  }));
  await Promise.all(buffered);
  let running = NaN;
  let waiting = NaN;
  const t0 = Date.now();
  while (Date.now() - t0 < 5000) {
    running = await metric('vllm:num_requests_running');
    waiting = await metric('vllm:num_requests_waiting');
    if (running === 0 && waiting === 0) break;
    await sleep(100);
  }
  check(running === 0 && waiting === 0, 'abandoned requests are cancelled: nothing running or waiting', { running, waiting, ms: Date.now() - t0 });
  const m = await get('/metrics');
  const abort = m.text.split('\n').find((l) => l.startsWith('vllm:request_success_total{') && l.includes('"abort"'));
  check(abort && Number(abort.split(' ').pop()) >= 9, 'the abandoned choices count as aborted', abort);
  check(await healthy(), 'still serving after abrupt disconnects');
  const r = await post(C, chat());
  check(r.status === 200, 'a normal request after all of it', r.status);
}
finish('abuse');
