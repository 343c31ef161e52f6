// responses_chain.mjs: a conversation of `turns` turns through
// previous_response_id, an image in every turn, each answer checked against
// one cold run over the same token sequence: `mmmamba generate` on the ids
// the daemon reports it consumed (return_token_ids, vLLM's extension) and on
// the tiles of every image so far (`mmmamba preprocess`, the same tiling).
// The cold side never sees the conversation, only ids and tiles, so a
// continuation that lost or changed any token, or mixed up an image,
// gives other ids. Used by responses.mjs and, after the state cache lands,
// by responses_cache.mjs (which also wants the x-mmmamba-state header).
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { model, check, validate, post, png, dataUrl, auth } from './common.mjs';

const tool = process.env.MMD_TOOL;           // the mmmamba binary
const modelDir = process.env.MMD_MODEL_DIR;  // the checkpoint the daemon serves
const tmp = process.env.MMD_TMP;             // a scratch directory

function cold(ids, tileFiles, maxTokens) {
  const tiles = path.join(tmp, `tiles-${tileFiles.length}.f32`);
  fs.writeFileSync(tiles, Buffer.concat(tileFiles.map((f) => fs.readFileSync(f))));
  const nTiles = tileFiles.reduce((n, f) => n + fs.statSync(f).size / (3 * 448 * 448 * 4), 0);
  const out = execFileSync(tool, ['generate', '--model', modelDir, '--prompt-ids', ids.join(' '),
    '--tiles', tiles, '--num-tiles', String(nTiles), '--max-tokens', String(maxTokens),
    '--print-ids', '--threads', '1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  return out.trim().split('\n')[0].split(/\s+/).filter((s) => s.length).map(Number);
}

// Runs the chain; returns [{ response, headers }] per turn. expectState:
// undefined (no check), 'resumed' or 'rebuilt' for turns 2..n.
async function specialId(text) {
  const r = await post('/tokenize', { model, prompt: text, add_special_tokens: false });
  return r.json?.tokens?.length === 1 ? r.json.tokens[0] : null;
}

// Runs the chain; returns [{ response, headers }] per turn. expectState:
// undefined (either), 'resumed' or 'rebuilt' for turns 2..n.
export async function chain({ turns = 10, maxTokens = 8, expectState, name = 'chain', headers = auth() } = {}) {
  const imEnd = await specialId('<|im_end|>'), imStart = await specialId('<|im_start|>');
  const ctxId = Number(/"img_context_token_id":\s*(\d+)/.exec(fs.readFileSync(path.join(modelDir, 'config.json'), 'utf8'))?.[1]);
  check(imEnd !== null && imStart !== null && ctxId > 0, `${name}: template ids`, { imEnd, imStart, ctxId });
  // (a 4:3 picture would take 12 tiles and a thumbnail: InternVL's tiling)
  // a prompt ends with <|im_end|> and the assistant header, as /tokenize renders it
  const tk = (await post('/tokenize', { model, messages: [{ role: 'user', content: 'x' }] })).json.tokens;
  const header = tk.slice(tk.lastIndexOf(imEnd));
  const results = [];
  const tileFiles = [];
  let prev = null;
  for (let k = 1; k <= turns; k++) {
    // a different picture each turn: size (1 tile or a 2x1 grid + thumbnail) and colours vary
    const w = k % 3 === 0 ? 128 : 64, h = 64; /* 1 tile, or 2 and a thumbnail */
    const img = png(w, h, (x, y) => [(x * k * 7) & 255, (y * 13 + k * 40) & 255, (k * 25) & 255]);
    const file = path.join(tmp, `chain-${k}.png`);
    fs.writeFileSync(file, img);
    const tf = path.join(tmp, `chain-${k}.f32`);
    execFileSync(tool, ['preprocess', file, '--model', modelDir, '--out', tf], { stdio: 'ignore' });
    tileFiles.push(tf);
    const body = {
      model, temperature: 0, max_output_tokens: maxTokens, return_token_ids: true,
      input: [{ role: 'user', content: [
        { type: 'input_image', image_url: dataUrl(img) },
        { type: 'input_text', text: `Turn ${k}: what changed in the picture?` }] }],
    };
    if (k === 1) body.instructions = 'Answer in a few words.';
    if (prev) body.previous_response_id = prev.id;
    const r = await post('/v1/responses', body, headers);
    if (!check(r.status === 200, `${name} turn ${k}: 200`, r.text)) return results;
    const resp = r.json;
    validate('Response', resp, `${name} turn ${k}`);
    const state = r.headers.get('x-mmmamba-state');
    if (k === 1)
      check(state === null, `${name} turn 1: no x-mmmamba-state (not a continuation)`, state);
    else if (expectState)
      check(state === expectState, `${name} turn ${k}: x-mmmamba-state ${expectState}`, state);
    else
      check(state === 'resumed' || state === 'rebuilt', `${name} turn ${k}: x-mmmamba-state set`, state);
    const ids = resp.prompt_token_ids, out = resp.output_token_ids;
    check(resp.usage.input_tokens === ids.length && resp.usage.output_tokens >= out.length,
      `${name} turn ${k}: usage counts the ids`, { usage: resp.usage, ids: ids.length, out: out.length });
    // the image runs: 256 context ids a tile, every image of the conversation so far
    const tiles = tileFiles.reduce((n, f) => n + fs.statSync(f).size / (3 * 448 * 448 * 4), 0);
    check(ids.filter((t) => t === ctxId).length === 256 * tiles, `${name} turn ${k}: ${tiles} tiles of image context`);
    check(header[0] === imEnd && ids.slice(-header.length).join() === header.join(),
      `${name} turn ${k}: ends with <|im_end|> and the assistant header`, { header, tail: ids.slice(-header.length) });
    if (prev) {
      // the stored conversation, exactly: previous prompt, previous answer's ids, <|im_end|>, the new turn
      const head = [...prev.prompt_token_ids, ...prev.output_token_ids, imEnd, imStart];
      check(head.every((t, i) => ids[i] === t), `${name} turn ${k}: the prompt extends the stored conversation`,
        { at: head.findIndex((t, i) => ids[i] !== t) });
    }
    const want = cold(ids, tileFiles, maxTokens);
    const got = out.slice();
    // a cold run prints the EOS that ended it; the response's ids stop before it
    const match = want.length === got.length ? want.every((t, i) => t === got[i])
      : want.length === got.length + 1 && got.every((t, i) => t === want[i]) && resp.status === 'completed';
    check(match, `${name} turn ${k}: same tokens as one cold run over the same ${ids.length} ids`, { got, want });
    if (k > 1 && expectState === 'resumed')
      check(resp.usage.input_tokens_details.cached_tokens >= prev.prompt_token_ids.length,
        `${name} turn ${k}: cached_tokens cover the history`, resp.usage);
    if (expectState === 'rebuilt')
      check(resp.usage.input_tokens_details.cached_tokens === 0, `${name} turn ${k}: nothing cached`, resp.usage);
    results.push({ response: resp, headers: r.headers });
    prev = resp;
  }
  return results;
}
