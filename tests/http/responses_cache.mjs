// responses_cache.mjs: continuations served from the state cache (run by
// check_responses_cache.sh once the state cache is in the scheduler). With
// MMD_EXPECT_STATE=resumed every turn from the second on says
// `x-mmmamba-state: resumed` and counts the history as cached tokens; with
// rebuilt (a daemon with --state-cache-bytes 0) nothing is cached. Either
// way every turn equals a cold run over the same ids (responses_chain.mjs),
// so a hit never changes the answer; a streamed continuation says so in its
// headers too.
import { model, check, finish, post } from './common.mjs';
import { chain } from './responses_chain.mjs';

const expect = process.env.MMD_EXPECT_STATE;
const turns = await chain({ turns: 10, maxTokens: 8, expectState: expect, name: `chain (${expect})` });
check(turns.length === 10, 'ten turns', turns.length);
if (turns.length) {
  const last = turns[turns.length - 1].response;
  const r = await post('/v1/responses', { model, previous_response_id: last.id, input: 'Once more.', max_output_tokens: 4, temperature: 0, stream: true });
  check(r.status === 200 && r.headers.get('x-mmmamba-state') === expect, `streamed continuation: x-mmmamba-state ${expect}`, r.headers.get('x-mmmamba-state'));
  const lines = r.text.split('\n').filter((l) => l.startsWith('data: '));
  const final = JSON.parse(lines[lines.length - 1].slice(6)).response;
  const cached = final.usage.input_tokens_details.cached_tokens;
  check(expect === 'resumed' ? cached >= last.usage.input_tokens : cached === 0, `streamed continuation: cached_tokens (${cached})`, final.usage);
}
finish(`responses_cache (${expect})`);
