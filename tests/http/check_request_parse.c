/* check_request_parse.c: http/request_parse.c and http/auth.c without a
 * server: strict UTF-8, JSON shape, every sampling field's type and range
 * with the `param` it names, chat messages rendered exactly as the chat
 * template renders them (images counted into tiles), completion prompts in
 * their four shapes, the context check, and the API keys. */
#include "http/request_parse.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <png.h>

#include "model/synthetic.h"
#include "testutil.h"

static char dir[256];
static struct mm_config cfg;
static struct mm_tokenizer *tok;
static struct mm_chat_template *tpl;
static struct mm_http_app app;

static void setup(void)
{
    struct mm_err err;
    mm_test_tmpdir(dir, sizeof dir);
    ck_assert_int_eq(mm_synthetic_preset("tiny-linear", &cfg, &err), MM_OK);
    const struct mm_synthetic_options so = {.seed = 1, .shards = 1};
    ck_assert_int_eq(mm_synthetic_write(dir, &cfg, &so, &err), MM_OK);
    ck_assert_int_eq(mm_config_load(dir, &cfg, &err), MM_OK);
    ck_assert_int_eq(mm_tokenizer_load_dir(dir, &tok, &err), MM_OK);
    ck_assert_int_eq(
        mm_chat_template_create(tok, cfg.template_name, cfg.tokens_per_tile, &tpl, &err), MM_OK);
    memset(&app, 0, sizeof app);
    app.model_name = "tiny";
    app.cfg = &cfg;
    app.tok = tok;
    app.tpl = tpl;
    app.max_model_len = 4096;
    app.max_prompt_bytes = 1000;
    app.max_n = 4;
    app.max_images = 2;
    app.image_limits.max_tiles_per_request = 8;
    ck_assert_int_eq(mm_image_params_from_config(&cfg, &app.image_limits, &app.image_params, &err),
                     MM_OK);
    ck_assert_int_eq(sem_init(&app.image_slots, 0, 1), 0);
}

static void teardown(void)
{
    sem_destroy(&app.image_slots);
    mm_chat_template_free(tpl);
    mm_tokenizer_free(tok);
    mm_test_rmdir(dir);
}

static cJSON *parse_ok(const char *s)
{
    cJSON *root;
    struct mm_api_error e;
    ck_assert_msg(mm_api_parse_body(s, strlen(s), &root, &e), "%s: %s", s, e.message);
    return root;
}

START_TEST(body_shape)
{
    struct mm_api_error e;
    cJSON *root;
    static const char *const bad[] = {
        "",
        "[1]",
        "3",
        "{\"a\":1} x",
        "{\"a\":",
        "{\"a\":\"\xff\"}",
        "{\"a\":\"\xc0\xaf\"}",
        "{\"a\":\"\xed\xa0\x80\"}",
        "{\"a\":\"\xf4\x90\x80\x80\"}",
        "{\"a\":\"\xe2\x82\"}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ck_assert_msg(!mm_api_parse_body(bad[i], strlen(bad[i]), &root, &e), "accepted %zu", i);
        ck_assert_int_eq(e.status, 400);
    }
    cJSON_Delete(parse_ok("{\"a\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\"}  \n"));
}
END_TEST

/* A field that must be refused with its own name as param. */
static void expect_param_error(const char *json, bool chat, const char *param)
{
    cJSON *root = parse_ok(json);
    struct mm_api_params p;
    struct mm_api_error e;
    ck_assert_msg(!mm_api_parse_params(&app, root, chat, &p, &e), "accepted %s", json);
    ck_assert_int_eq(e.status, 400);
    ck_assert_msg(strcmp(e.param, param) == 0, "%s: param \"%s\"", json, e.param);
    cJSON_Delete(root);
}

START_TEST(params)
{
    cJSON *root = parse_ok("{}");
    struct mm_api_params p;
    struct mm_api_error e;
    ck_assert(mm_api_parse_params(&app, root, true, &p, &e));
    ck_assert(p.n == 1 && p.max_tokens == -1 && p.temperature == 1.0 && p.top_k == -1 && !p.stream);
    ck_assert_int_eq(p.default_max_tokens, -1); /* chat: up to the context */
    ck_assert(mm_api_parse_params(&app, root, false, &p, &e));
    ck_assert_int_eq(p.max_tokens, -1);
    ck_assert_int_eq(p.default_max_tokens, 16); /* completions: OpenAI's default */
    cJSON_Delete(root);
    /* logit_bias: an empty map or null asks for nothing */
    root = parse_ok("{\"logit_bias\":{}}");
    ck_assert(mm_api_parse_params(&app, root, true, &p, &e));
    ck_assert(mm_api_parse_params(&app, root, false, &p, &e));
    cJSON_Delete(root);
    root = parse_ok("{\"logit_bias\":null}");
    ck_assert(mm_api_parse_params(&app, root, false, &p, &e));
    cJSON_Delete(root);
    root = parse_ok("{\"n\":3,\"max_completion_tokens\":9,\"max_tokens\":5,\"temperature\":0,"
                    "\"top_p\":0.5,\"top_k\":7,\"min_p\":0.1,\"seed\":-3,\"stop\":[\"a\",\"bc\"],"
                    "\"logprobs\":true,\"top_logprobs\":20,\"stream\":true,"
                    "\"stream_options\":{\"include_usage\":true},\"ignore_eos\":true,"
                    "\"presence_penalty\":-2,\"frequency_penalty\":2,\"repetition_penalty\":1.3,"
                    "\"temperature\":null,\"user\":\"u\",\"unknown_field\":[1]}");
    ck_assert(mm_api_parse_params(&app, root, true, &p, &e));
    ck_assert(p.n == 3 && p.max_tokens == 9 && p.top_k == 7 && p.has_seed && (int64_t)p.seed == -3);
    ck_assert(p.n_stop == 2 && strcmp(p.stop[1], "bc") == 0 && p.logprobs && p.top_logprobs == 20);
    ck_assert(p.stream && p.include_usage && p.ignore_eos && p.repetition_penalty == 1.3);
    cJSON_Delete(root);
    root = parse_ok("{\"logprobs\":3,\"stop\":\"x\"}");
    ck_assert(mm_api_parse_params(&app, root, false, &p, &e));
    ck_assert(p.logprobs && p.top_logprobs == 3 && p.n_stop == 1);
    cJSON_Delete(root);

    expect_param_error("{\"n\":5}", true, "n"); /* above max_n */
    expect_param_error("{\"n\":1.5}", true, "n");
    expect_param_error("{\"temperature\":\"1\"}", true, "temperature");
    expect_param_error("{\"temperature\":2.5}", true, "temperature");
    expect_param_error("{\"top_p\":0}", true, "top_p");
    expect_param_error("{\"max_tokens\":0}", true, "max_tokens");
    expect_param_error("{\"max_tokens\":4097}", true, "max_tokens");
    expect_param_error("{\"seed\":1e20}", true, "seed");
    expect_param_error("{\"stop\":[\"\"]}", true, "stop");
    expect_param_error("{\"stop\":{}}", true, "stop");
    expect_param_error("{\"top_logprobs\":21,\"logprobs\":true}", true, "top_logprobs");
    expect_param_error("{\"top_logprobs\":2}", true, "top_logprobs");
    expect_param_error("{\"stream_options\":{\"include_usage\":true}}", true, "stream_options");
    expect_param_error("{\"stream\":true,\"stream_options\":{\"include_usage\":1}}", true,
                       "stream_options.include_usage");
    expect_param_error("{\"tools\":[{}]}", true, "tools");
    expect_param_error("{\"logprobs\":true}", false, "logprobs");
    expect_param_error("{\"echo\":true}", false, "echo");
    expect_param_error("{\"best_of\":2}", false, "best_of");
    /* logit_bias is refused, never silently ignored */
    expect_param_error("{\"logit_bias\":{\"50256\":-100}}", true, "logit_bias");
    expect_param_error("{\"logit_bias\":{\"50256\":-100}}", false, "logit_bias");
    expect_param_error("{\"logit_bias\":[1]}", true, "logit_bias");
    root = parse_ok("{\"logit_bias\":{\"7\":5}}");
    ck_assert(!mm_api_parse_params(&app, root, false, &p, &e));
    ck_assert_str_eq(e.code, "unsupported_parameter");
    cJSON_Delete(root);
}
END_TEST

/* Renders messages the way the HTTP layer does and directly; they must agree. */
START_TEST(chat_matches_template)
{
    cJSON *root = parse_ok("{\"messages\":[{\"role\":\"system\",\"content\":\"Be brief.\"},"
                           "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hi\"},"
                           "{\"type\":\"text\",\"text\":\"there\"}]},"
                           "{\"role\":\"assistant\",\"content\":\"Hello.\"},"
                           "{\"role\":\"user\",\"content\":\"<|im_end|>?\"}]}");
    struct mm_api_prompt prompt;
    struct mm_api_error e;
    ck_assert_msg(
        mm_api_chat_prompt(&app, cJSON_GetObjectItem(root, "messages"), true, &prompt, &e), "%s",
        e.message);
    const struct mm_chat_part p0 = {.kind = MM_CHAT_TEXT, .text = "Be brief.", .len = 9};
    const struct mm_chat_part p1[2] = {{.kind = MM_CHAT_TEXT, .text = "Hi", .len = 2},
                                       {.kind = MM_CHAT_TEXT, .text = "there", .len = 5}};
    const struct mm_chat_part p2 = {.kind = MM_CHAT_TEXT, .text = "Hello.", .len = 6};
    const struct mm_chat_part p3 = {.kind = MM_CHAT_TEXT, .text = "<|im_end|>?", .len = 11};
    const struct mm_chat_message msgs[4] = {{MM_CHAT_SYSTEM, &p0, 1},
                                            {MM_CHAT_USER, p1, 2},
                                            {MM_CHAT_ASSISTANT, &p2, 1},
                                            {MM_CHAT_USER, &p3, 1}};
    const struct mm_chat_options opt = {.add_generation_prompt = true, .add_bos = true};
    struct mm_tokens want = {0};
    struct mm_err err;
    ck_assert_int_eq(mm_chat_render(tpl, msgs, 4, &opt, &want, NULL, NULL, &err), MM_OK);
    ck_assert_int_eq(prompt.ids.n, want.n);
    ck_assert(memcmp(prompt.ids.ids, want.ids, (size_t)want.n * sizeof *want.ids) == 0);
    ck_assert_int_eq(prompt.n_tiles, 0);
    mm_tokens_free(&want);
    mm_api_prompt_free(&prompt);
    cJSON_Delete(root);
}
END_TEST

/* A w x h RGB PNG of the test image, as a data: URL (heap). */
static char *png_data_url(int64_t w, int64_t h)
{
    struct mm_image img = mm_test_image(w, h, 5);
    png_image pi = {.version = PNG_IMAGE_VERSION,
                    .width = (png_uint_32)w,
                    .height = (png_uint_32)h,
                    .format = PNG_FORMAT_RGB};
    png_alloc_size_t len = 0;
    ck_assert(png_image_write_to_memory(&pi, NULL, &len, 0, img.rgb, 0, NULL));
    unsigned char *buf = malloc(len);
    ck_assert(png_image_write_to_memory(&pi, buf, &len, 0, img.rgb, 0, NULL));
    mm_image_free(&img);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *url = malloc(len / 3 * 4 + 64);
    size_t n = (size_t)sprintf(url, "data:image/png;base64,");
    for (size_t i = 0; i < len; i += 3) {
        const unsigned v = (unsigned)buf[i] << 16 | (i + 1 < len ? (unsigned)buf[i + 1] << 8 : 0) |
                           (i + 2 < len ? buf[i + 2] : 0);
        url[n++] = b64[v >> 18 & 63];
        url[n++] = b64[v >> 12 & 63];
        url[n++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
        url[n++] = i + 2 < len ? b64[v & 63] : '=';
    }
    url[n] = '\0';
    free(buf);
    return url;
}

START_TEST(chat_images)
{
    char *url = png_data_url(900, 300); /* 3x1 grid + thumbnail */
    char *json = malloc(2 * strlen(url) + 512);
    sprintf(json,
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
            "\"image_url\":{\"url\":\"%s\"}},{\"type\":\"text\",\"text\":\"What?\"}]}]}",
            url);
    cJSON *root = parse_ok(json);
    struct mm_api_prompt prompt;
    struct mm_api_error e;
    ck_assert_msg(
        mm_api_chat_prompt(&app, cJSON_GetObjectItem(root, "messages"), true, &prompt, &e), "%s",
        e.message);
    ck_assert_int_eq(prompt.n_tiles, 4);
    int64_t img = 0;
    for (int64_t i = 0; i < prompt.ids.n; i++)
        img += prompt.ids.ids[i] == cfg.img_context_token_id;
    ck_assert_int_eq(img, 4 * cfg.tokens_per_tile);
    mm_api_prompt_free(&prompt);
    cJSON_Delete(root);
    /* three such images: over max_images; two: 8 tiles, the request's budget */
    sprintf(json,
            "{\"messages\":[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
            "\"image_url\":{\"url\":\"%s\"}},{\"type\":\"image_url\",\"image_url\":\"%s\"}]}]}",
            url, url);
    root = parse_ok(json);
    ck_assert(mm_api_chat_prompt(&app, cJSON_GetObjectItem(root, "messages"), true, &prompt, &e));
    ck_assert_int_eq(prompt.n_tiles, 8);
    mm_api_prompt_free(&prompt);
    cJSON_Delete(root);
    app.image_limits.max_tiles_per_request = 7;
    root = parse_ok(json);
    ck_assert(!mm_api_chat_prompt(&app, cJSON_GetObjectItem(root, "messages"), true, &prompt, &e));
    ck_assert_int_eq(e.status, 413);
    ck_assert_str_eq(e.param, "messages[0].content[1].image_url");
    cJSON_Delete(root);
    app.image_limits.max_tiles_per_request = 8;
    free(json);
    free(url);
}
END_TEST

static void expect_chat_error(const char *messages, int status, const char *param)
{
    char json[4096];
    snprintf(json, sizeof json, "{\"messages\":%s}", messages);
    cJSON *root = parse_ok(json);
    struct mm_api_prompt prompt;
    struct mm_api_error e;
    ck_assert_msg(
        !mm_api_chat_prompt(&app, cJSON_GetObjectItem(root, "messages"), true, &prompt, &e),
        "accepted %s", messages);
    ck_assert_msg(e.status == status, "%s: status %d", messages, e.status);
    ck_assert_msg(strcmp(e.param, param) == 0, "%s: param \"%s\"", messages, e.param);
    cJSON_Delete(root);
}

START_TEST(chat_errors)
{
    expect_chat_error("[]", 400, "messages");
    expect_chat_error("{}", 400, "messages");
    expect_chat_error("[1]", 400, "messages[0]");
    expect_chat_error("[{\"content\":\"x\"}]", 400, "messages[0].role");
    expect_chat_error("[{\"role\":\"robot\",\"content\":\"x\"}]", 400, "messages[0].role");
    expect_chat_error("[{\"role\":\"user\",\"content\":\"x\"},{\"role\":\"user\"}]", 400,
                      "messages[1].content");
    expect_chat_error("[{\"role\":\"user\",\"content\":[{\"type\":\"video\"}]}]", 400,
                      "messages[0].content[0]");
    expect_chat_error("[{\"role\":\"assistant\",\"content\":[{\"type\":\"image_url\","
                      "\"image_url\":{\"url\":\"data:image/png;base64,AAAA\"}}]}]",
                      400, "messages[0].content[0]");
    expect_chat_error("[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                      "\"image_url\":{\"url\":\"https://x/y.png\"}}]}]",
                      400, "messages[0].content[0].image_url");
    expect_chat_error("[{\"role\":\"user\",\"content\":[{\"type\":\"image_url\","
                      "\"image_url\":{\"url\":\"data:image/png;base64,!!\"}}]}]",
                      400, "messages[0].content[0].image_url");
    char text[1051], big[1200];
    memset(text, 'a', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    snprintf(big, sizeof big, "[{\"role\":\"user\",\"content\":\"%s\"}]", text);
    expect_chat_error(big, 413, "messages");
}
END_TEST

START_TEST(completion_prompts)
{
    static const struct {
        const char *json;
        int64_t n;
    } ok[] = {{"\"Hello\"", 1}, {"[\"a\",\"b\",\"c\"]", 3}, {"[1,5,6]", 1}, {"[[1,2],[3]]", 2}};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char json[128];
        snprintf(json, sizeof json, "{\"prompt\":%s}", ok[i].json);
        cJSON *root = parse_ok(json);
        struct mm_api_prompt *p;
        int64_t n;
        struct mm_api_error e;
        ck_assert_msg(
            mm_api_completion_prompts(&app, cJSON_GetObjectItem(root, "prompt"), true, &p, &n, &e),
            "%s: %s", json, e.message);
        ck_assert_int_eq(n, ok[i].n);
        if (i == 2)
            ck_assert(p[0].ids.n == 3 && p[0].ids.ids[2] == 6);
        if (i == 0)
            ck_assert_int_eq(p[0].ids.ids[0], mm_tokenizer_bos_id(tok));
        mm_api_prompts_free(p, n);
        cJSON_Delete(root);
    }
    char img[64];
    snprintf(img, sizeof img, "[1,%lld]", (long long)cfg.img_context_token_id);
    const char *bad[] = {"5",           "[]",   "[1,-1]", "[1,99999]",
                         "[\"a\",[1]]", "null", img,      "\"<IMG_CONTEXT>\""};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char json[128];
        snprintf(json, sizeof json, "{\"prompt\":%s}", bad[i]);
        cJSON *root = parse_ok(json);
        struct mm_api_prompt *p;
        int64_t n;
        struct mm_api_error e;
        ck_assert_msg(
            !mm_api_completion_prompts(&app, cJSON_GetObjectItem(root, "prompt"), true, &p, &n, &e),
            "accepted %s", bad[i]);
        ck_assert_int_eq(e.status, 400);
        ck_assert_msg(strncmp(e.param, "prompt", 6) == 0, "%s: param %s", bad[i], e.param);
        cJSON_Delete(root);
    }
}
END_TEST

START_TEST(context_length)
{
    struct mm_api_error e;
    int64_t max = -1;
    ck_assert(mm_api_check_length(&app, 100, -1, &max, &e));
    ck_assert_int_eq(max, 3996);
    max = 3996;
    ck_assert(mm_api_check_length(&app, 100, -1, &max, &e));
    max = 3997;
    ck_assert(!mm_api_check_length(&app, 100, -1, &max, &e));
    ck_assert_str_eq(e.param, "max_tokens");
    /* a default applies only when max_tokens is unset, and shrinks to the room left */
    max = -1;
    ck_assert(mm_api_check_length(&app, 100, 16, &max, &e));
    ck_assert_int_eq(max, 16);
    max = 40;
    ck_assert(mm_api_check_length(&app, 100, 16, &max, &e));
    ck_assert_int_eq(max, 40);
    max = -1;
    ck_assert(mm_api_check_length(&app, 4090, 16, &max, &e));
    ck_assert_int_eq(max, 6);
    max = -1;
    ck_assert(!mm_api_check_length(&app, 4096, -1, &max, &e));
    ck_assert_str_eq(e.code, "context_length_exceeded");
}
END_TEST

START_TEST(keys)
{
    char path[300];
    snprintf(path, sizeof path, "%s/keys", dir);
    const char file[] = "# operators\n  key-one  \n\nkey-two\n# key-three\n";
    mm_test_write_file(path, file, sizeof file - 1);
    char **k;
    struct mm_err err;
    ck_assert_int_eq(mm_http_keys_load("alpha, beta", path, &k, &err), MM_OK);
    app.api_keys = k;
    ck_assert(mm_http_auth_ok(&app, "Bearer alpha"));
    ck_assert(mm_http_auth_ok(&app, "Bearer beta"));
    ck_assert(mm_http_auth_ok(&app, "bearer key-two"));
    ck_assert(mm_http_auth_ok(&app, "Bearer key-one"));
    ck_assert(!mm_http_auth_ok(&app, "Bearer key-three"));
    ck_assert(!mm_http_auth_ok(&app, "Bearer alph"));
    ck_assert(!mm_http_auth_ok(&app, "Bearer alphaa"));
    ck_assert(!mm_http_auth_ok(&app, "Basic alpha"));
    ck_assert(!mm_http_auth_ok(&app, NULL));
    ck_assert(!mm_http_auth_ok(&app, "Bearer "));
    bool ok;
    ck_assert_str_eq(mm_http_auth_key(&app, "Bearer key-two", &ok), "key-two"); /* the owner */
    ck_assert(ok);
    ck_assert_ptr_null(mm_http_auth_key(&app, "Bearer key-zwei", &ok));
    ck_assert(!ok);
    app.api_keys = NULL;
    ck_assert(mm_http_auth_ok(&app, NULL)); /* no keys: open */
    ck_assert_ptr_null(mm_http_auth_key(&app, "Bearer key-two", &ok));
    ck_assert(ok);
    mm_http_keys_free(k);
    ck_assert_int_ne(mm_http_keys_load("has space", NULL, &k, &err), MM_OK);
    snprintf(path, sizeof path, "%s/nokeys", dir);
    ck_assert_int_eq(mm_http_keys_load("", path, &k, &err), MM_ERR_IO);
    ck_assert(strstr(err.msg, "nokeys") != NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("request_parse");
    TCase *tc = tcase_create("all");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, body_shape);
    tcase_add_test(tc, params);
    tcase_add_test(tc, chat_matches_template);
    tcase_add_test(tc, chat_images);
    tcase_add_test(tc, chat_errors);
    tcase_add_test(tc, completion_prompts);
    tcase_add_test(tc, context_length);
    tcase_add_test(tc, keys);
    suite_add_tcase(s, tc);
    return mm_test_run(s);
}
