/* cmd_tokenize.c — `kvscope tokenize`: JSONL text lines to token ids, and an encode/decode speed benchmark.
 *
 *     kvscope tokenize --tokenizer DIR|tokenizer.json|model.gguf --input in.jsonl [--add_special]
 *                      [--chat auto|llama3|mistral|chatml|qwen2|none] [--output out.jsonl]
 *         each line {"text": "..."} -> one line {"ids": [...]} (stdout by default; blank lines are skipped)
 *     kvscope tokenize --tokenizer P --bench FILE|DIR [--bench_repeat N]
 *         encodes (and decodes) the file, or the *.txt files of a directory concatenated (repeated up to at
 *         least 1 MB), N times on one thread and prints the best time and MB/s.
 */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli/commands.h"
#include "cli/options.h"
#include "core/file.h"
#include "core/json.h"
#include "tokenizer/chat.h"
#include "tokenizer/tokenizer.h"

typedef struct tok_opts {
    const char *tokenizer, *input, *output, *chat, *bench;
    int add_special, repeat;
} tok_opts;

/* Writes {"ids": [...]} and a newline. */
static ks_status write_ids(FILE *out, const ks_ids *ids, const char *path) {
    fputs("{\"ids\": [", out);
    for (int i = 0; i < ids->n; i++) fprintf(out, i ? ", %d" : "%d", ids->ids[i]);
    fputs("]}\n", out);
    return ferror(out) ? ks_fail(KS_ERR_IO, "%s: write failed", path) : KS_OK;
}

static int blank(const char *s) {
    for (; *s; s++)
        if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n') return 0;
    return 1;
}

/* One input line -> ids (with the chat template applied when asked). */
static ks_status encode_line(const ks_tokenizer *tok, const tok_opts *o, const char *line, size_t len,
                             const char *where, ks_ids *ids) {
    cJSON *j;
    KS_TRY(ks_json_parse(line, len, where, &j));
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(j, "text");
    ks_status st = KS_OK;
    if (!cJSON_IsString(text)) {
        st = ks_fail(KS_ERR_FORMAT, "%s: expected a JSON object with a string field 'text'", where);
    } else if (o->chat) {
        char *prompt = NULL;
        st = ks_chat_apply(tok, o->chat, NULL, text->valuestring, &prompt, NULL);
        if (st == KS_OK) st = ks_tokenizer_encode(tok, prompt, strlen(prompt), o->add_special, ids);
        free(prompt);
    } else {
        st = ks_tokenizer_encode(tok, text->valuestring, strlen(text->valuestring), o->add_special, ids);
    }
    if (st != KS_OK && st != KS_ERR_FORMAT) ks_fail_context(st, "%s", where);
    cJSON_Delete(j);
    return st;
}

static ks_status tokenize_jsonl(const ks_tokenizer *tok, const tok_opts *o) {
    FILE *in;
    KS_TRY(ks_file_open_read(o->input, &in));
    FILE *out = o->output ? fopen(o->output, "w") : stdout;
    if (!out) {
        fclose(in);
        return ks_fail(KS_ERR_IO, "%s: cannot create the output file", o->output);
    }
    char *line = NULL, where[4200];
    size_t cap = 0;
    ssize_t len;
    long lineno = 0;
    ks_ids ids = {0};
    ks_status st = KS_OK;
    while (st == KS_OK && (len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        if (blank(line)) continue;
        snprintf(where, sizeof where, "%s: line %ld", o->input, lineno);
        ids.n = 0;
        st = encode_line(tok, o, line, (size_t)len, where, &ids);
        if (st == KS_OK) st = write_ids(out, &ids, o->output ? o->output : "stdout");
    }
    if (st == KS_OK && ferror(in)) st = ks_fail(KS_ERR_IO, "%s: read error", o->input);
    if (out != stdout && fclose(out) != 0 && st == KS_OK) st = ks_fail(KS_ERR_IO, "%s: write failed", o->output);
    fclose(in);
    free(line);
    ks_ids_free(&ids);
    return st;
}

/* ---- --bench ---- */

static int txt_name(const struct dirent *d) {
    size_t n = strlen(d->d_name);
    return n > 4 && strcmp(d->d_name + n - 4, ".txt") == 0;
}

/* The file, or the *.txt files of the directory in name order, concatenated into *text. */
static ks_status read_corpus(const char *path, char **text, size_t *len) {
    if (!ks_is_directory(path)) return ks_file_read_all(path, text, len);
    struct dirent **names;
    int n = scandir(path, &names, txt_name, alphasort);
    if (n < 0) return ks_fail(KS_ERR_IO, "%s: cannot list the directory", path);
    ks_status st = KS_OK;
    char *all = NULL;
    size_t total = 0;
    for (int i = 0; i < n; i++) {
        char file[4096], *part = NULL;
        size_t plen = 0;
        if (st == KS_OK) st = ks_file_read_all(ks_path_join(file, sizeof file, path, names[i]->d_name), &part, &plen);
        char *grown = st == KS_OK ? realloc(all, total + plen + 1) : NULL;
        if (st == KS_OK && !grown) st = ks_fail(KS_ERR_NOMEM, "out of memory reading %s", path);
        if (grown) {
            all = grown;
            memcpy(all + total, part, plen);
            total += plen;
            all[total] = 0;
        }
        free(part);
        free(names[i]);
    }
    free(names);
    if (st == KS_OK && !all) st = ks_fail(KS_ERR_IO, "%s: no *.txt files to benchmark on", path);
    if (st != KS_OK) {
        free(all);
        return st;
    }
    *text = all;
    *len = total;
    return KS_OK;
}

#define BENCH_MIN_BYTES 1000000

/* Repeats text[0..*len) until it is at least BENCH_MIN_BYTES long. */
static ks_status tile_corpus(char **text, size_t *len) {
    if (*len == 0 || *len >= BENCH_MIN_BYTES) return KS_OK;
    size_t copies = (BENCH_MIN_BYTES + *len - 1) / *len;
    char *t = realloc(*text, copies * *len + 1);
    if (!t) return ks_fail(KS_ERR_NOMEM, "out of memory tiling the benchmark text");
    for (size_t c = 1; c < copies; c++) memcpy(t + c * *len, t, *len);
    *len *= copies;
    t[*len] = 0;
    *text = t;
    return KS_OK;
}

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static ks_status bench(const ks_tokenizer *tok, const tok_opts *o) {
    char *text;
    size_t len;
    KS_TRY(read_corpus(o->bench, &text, &len));
    ks_status st = tile_corpus(&text, &len);
    if (st != KS_OK) {
        free(text);
        return st;
    }
    ks_ids ids = {0};
    char *back = NULL;
    double enc = 1e30, dec = 1e30;
    for (int r = 0; r < (o->repeat > 0 ? o->repeat : 1) && st == KS_OK; r++) {
        ids.n = 0;
        double t0 = now_s();
        st = ks_tokenizer_encode(tok, text, len, 0, &ids);
        double t1 = now_s();
        free(back);
        back = NULL;
        if (st == KS_OK) st = ks_tokenizer_decode(tok, ids.ids, ids.n, 0, &back);
        double t2 = now_s();
        if (t1 - t0 < enc) enc = t1 - t0;
        if (t2 - t1 < dec) dec = t2 - t1;
    }
    if (st == KS_OK) {
        double mb = (double)len / 1e6;
        printf("tokenizer   %s\ncorpus      %s: %.3f MB, %d tokens (%.2f bytes/token)\n", o->tokenizer, o->bench, mb,
               ids.n, ids.n ? (double)len / ids.n : 0.0);
        printf("encode      %.3f s  (%.2f MB/s, %.0f tokens/s; best of %d, one thread)\n", enc, mb / enc,
               ids.n / enc, o->repeat);
        printf("decode      %.3f s  (%.2f MB/s)\nround trip  %s\n", dec, mb / dec,
               strcmp(back, text) == 0 ? "identical" : "differs (normalizer or clean-up changed the text)");
    }
    free(back);
    free(text);
    ks_ids_free(&ids);
    return st;
}

ks_status ks_cmd_tokenize(int argc, char **argv) {
    tok_opts o = {.repeat = 3};
    const ks_option opts[] = {
        {"tokenizer", KS_OPT_STRING, &o.tokenizer, "P", "tokenizer.json, a directory holding one, or a .gguf", 1},
        {"input", KS_OPT_STRING, &o.input, "F", "JSONL input, one {\"text\": ...} per line", 0},
        {"output", KS_OPT_STRING, &o.output, "F", "JSONL output, one {\"ids\": [...]} per line (default stdout)", 0},
        {"add_special", KS_OPT_FLAG, &o.add_special, NULL, "add the post-processor's tokens (BOS), as HF encode", 0},
        {"chat", KS_OPT_STRING, &o.chat, "NAME", "apply a chat template first: auto, llama3, mistral, chatml, none", 0},
        {"bench", KS_OPT_STRING, &o.bench, "PATH", "time encode/decode of a text file or *.txt directory (>= 1 MB)", 0},
        {"bench_repeat", KS_OPT_INT, &o.repeat, "N", "benchmark repetitions (best time is reported)", 0},
        {0},
    };
    int help = 0;
    KS_TRY(ks_options_parse(opts, argc, argv, "tokenize",
                            "encode JSONL text lines to token ids, or benchmark the tokenizer", &help));
    if (help) return KS_OK;
    if (!o.input && !o.bench) return ks_fail(KS_ERR_ARG, "tokenize: give --input F (or --bench PATH)");
    if (o.repeat < 1) return ks_fail(KS_ERR_ARG, "tokenize: --bench_repeat must be at least 1");
    ks_tokenizer *tok;
    KS_TRY(ks_tokenizer_load(&tok, o.tokenizer));
    char *probe = NULL; /* reject an unknown --chat name before reading any input */
    ks_status st = o.chat ? ks_chat_apply(tok, o.chat, NULL, "", &probe, NULL) : KS_OK;
    free(probe);
    if (st == KS_OK) st = o.bench ? bench(tok, &o) : tokenize_jsonl(tok, &o);
    ks_tokenizer_free(tok);
    return st;
}
