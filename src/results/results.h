/* results.h — the HDF5 result file of one model × benchmark × method configuration.
 *
 * Writer (rank 0 only; not thread-safe, so callers serialise their calls, as mpi/dispatch.h does):
 *
 *     ks_results_meta meta = {.identity = resolved_config_yaml, .version = KS_VERSION, .git_revision = rev,
 *                             .command_line = cmd, .model = "SmolLM2", .benchmark = "RULER", .method = "SnapKV"};
 *     ks_results *res = NULL;
 *     KS_TRY(ks_results_open(&res, "out/SmolLM2_RULER_SnapKV.h5", &meta));   // creates, or resumes
 *     if (!ks_results_is_done(res, "niah_single_1", 4096, 3)) {
 *         ... run the sample into a ks_result r ...
 *         KS_TRY(ks_results_append(res, &r));          // durable on disk when it returns
 *     }
 *     KS_TRY(ks_results_close(res));                   // final commit; frees in every case
 *
 * Reader (any process, read-only; never modifies the file):
 *
 *     ks_results_data d = {0};
 *     KS_TRY(ks_results_read("out/x.h5", &d));          // d.meta, d.rows[d.n_rows] with their layer rows
 *     ks_results_data_free(&d);
 *
 * File layout (format_version 1). Everything reads with h5py + pandas alone (tests/tools/read_results.py):
 *   /               attributes (variable-length UTF-8 strings unless noted): kvscope_format = "kvscope-results",
 *                   format_version (int), kvscope_version, git_revision, command_line, config (the identity
 *                   text), config_hash (FNV-1a 64 of config, hex), model_config, method_options, hardware,
 *                   model, benchmark, method, start_time / end_time (ISO 8601 UTC; first open / last commit),
 *                   wall_seconds (double: the summed duration of every session), sessions (int: opens).
 *   /samples/<col>  1-D extendible column datasets of equal length, one row per finished sample, in commit
 *                   order: task, length, index, seed, prompt_tokens, generated_tokens, prediction, answers,
 *                   score, prefill_s, decode_s, peak_bytes, kv_bytes_before, kv_bytes_after. `task` is a
 *                   fixed-length UTF-8 string, `prediction` and `answers` (a JSON array) variable-length UTF-8.
 *   /layers/<col>   1-D extendible column datasets of equal length, one row per sample × layer (× KV head):
 *                   sample (row number in /samples), task, length, index (the sample's key), then layer,
 *                   kv_head, budget, kept, attn_mass_kept, key_norm_mean, key_norm_max, sparse_density,
 *                   quant_error, quant_error_v, residual_k, residual_v, kv_bytes, merges_prompt, merges_decode,
 *                   merge_prob_mean, merge_dv_rel, channels_kept, sparse_blocks, sparse_coverage,
 *                   sparse_query_aware, sparse_djs (ks_layer_stat). Every dataset has a 'description'
 *                   attribute (meaning, unit). A file written before the quantization, value-merging,
 *                   channel-pruning and sparse-prefill columns existed reads them as 0, and gains them (0 for its
 *                   rows) when resumed.
 *   pandas: pd.DataFrame({k: d.asstr()[()] if d.dtype.kind in "SO" else d[()] for k, d in f["samples"].items()})
 *
 * Durability (a kill at any moment loses at most the samples in flight and never leaves an unreadable file):
 * HDF5 1.10 has no journal. A process killed while HDF5 updates metadata in place can leave B-tree nodes,
 * object headers and the superblock's end-of-allocation out of step, and "trust only rows below a done
 * count" does not help when the structures that locate those rows are torn. SWMR orders metadata flushes,
 * but a killed SWMR writer still leaves superblock status flags and a stale end-of-allocation that must be
 * repaired (h5clear) before h5py can open the file normally. So the writer never modifies the file at `path`
 * in place: it holds the file in memory (HDF5 core driver) and every append ends with a commit: H5Fflush,
 * H5Fget_file_image, write `<path>.kvscope-tmp`, fsync, rename() over `path`, fsync the directory. rename is
 * atomic, so `path` always holds the complete file of the last commit: readable by anyone at any moment (also
 * during a run), and a kill during a commit leaves the previous commit. A sample counts as done only once its
 * commit returned. The price is writing the whole file per sample; /samples and /layers are compressed
 * (shuffle + deflate): 720 samples with 288 layer rows each make a 0.9 MB file and a commit takes about
 * 10 ms on a local disk (fsync included), small next to a sample's seconds. The first commit of a new file
 * uses link(), so a file that appeared at `path` meanwhile is never replaced. An exclusive flock on
 * `<path>.lock` (removed at close; it names the holder's pid and host) refuses a second writer, after waiting
 * up to 3 s for a holder that is on its way out (the ranks of a job whose launcher was just killed).
 *
 * Resume and identity: opening an existing file compares its `config` attribute with meta.identity byte for
 * byte. Equal: the file is reused and ks_results_is_done() answers from its /samples. Different: KS_ERR_ARG
 * naming the file and the first differing line. A non-HDF5 file, a corrupt HDF5 file or an HDF5 file not
 * written by kvscope at `path`: a clear error, and the file is left exactly as it was.
 */
#ifndef KS_RESULTS_H
#define KS_RESULTS_H

#include <stdint.h>

#include "results/record.h"
#include "core/status.h"

#define KS_RESULTS_FORMAT "kvscope-results"
#define KS_RESULTS_FORMAT_VERSION 1

/* What the caller knows about the run; NULL strings are stored as "". */
typedef struct ks_results_meta {
    const char *identity;       /* required: the resolved configuration text (benchmark YAML, method options,
                                   model identity, ...); two runs share a file iff these are byte-equal */
    const char *version;        /* kvscope version */
    const char *git_revision;
    const char *command_line;
    const char *model_config;   /* the model's parsed config (e.g. JSON) */
    const char *method_options; /* the method's resolved options */
    const char *hardware;       /* e.g. "1x NVIDIA H200, 16 cores" */
    const char *model;          /* short labels for reports: model name, benchmark name, method name */
    const char *benchmark;
    const char *method;
} ks_results_meta;

/* Identifies a sample across runs (and a row of /samples). */
typedef struct ks_sample_key {
    char task[KS_TASK_MAX];
    int length, index;
} ks_sample_key;

typedef struct ks_results ks_results; /* opaque writer handle */

/* Creates `path` (its directory must exist) or resumes it when it holds the same configuration; see the
 * header comment for the checks. On success *out is a handle for ks_results_close(); on failure *out is NULL
 * and an existing file is untouched. */
ks_status ks_results_open(ks_results **out, const char *path, const ks_results_meta *meta);

/* 1 if (task, length, index) is already recorded in the file (including rows appended by this handle). */
int ks_results_is_done(const ks_results *r, const char *task, int length, int index);

/* Number of samples recorded (rows of /samples). */
int ks_results_count(const ks_results *r);

/* Appends one /samples row and r->n_layers /layers rows, then commits (see Durability). A sample that is
 * already recorded is refused with KS_ERR_ARG (every sample is written exactly once). After a failed
 * append the handle refuses further appends; the file keeps its last commit. */
ks_status ks_results_append(ks_results *r, const ks_result *res);

/* Final commit (end_time, wall_seconds), releases the lock and frees the handle, also on error; NULL is a
 * no-op. */
ks_status ks_results_close(ks_results *r);

/* Everything in a result file, read-only. */
typedef struct ks_results_data {
    ks_results_meta meta;    /* strings owned by this struct (identity = the `config` attribute) */
    char *config_hash;       /* owned */
    char *start_time;        /* owned, ISO 8601 UTC */
    char *end_time;          /* owned */
    double wall_seconds;
    int sessions;
    ks_result *rows;         /* (n_rows) in file order, each with its layer rows; owned */
    int n_rows;
} ks_results_data;

ks_status ks_results_read(const char *path, ks_results_data *d);
void ks_results_data_free(ks_results_data *d);

#endif
