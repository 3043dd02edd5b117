/* cmd_data.c - 'sluice data IN... -o OUT.bin [--val-fraction F] [--fim RATE]': text to
 * token shards with the byte-level tokenizer (one token per byte, vocabulary 256), in
 * llm.c's shard format.  With --val-fraction, the last fraction of the tokens goes to
 * a second shard, OUT_val.bin, for validation.  With --fim, each input file is a
 * document and a fraction RATE of them is put in Fill-In-the-Middle form
 * (runtime/data.h: rt_fim_document), which adds three sentinel tokens (vocab 259). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "args.h"
#include "commands.h"
#include "runtime/data.h"
#include "runtime/rt.h"
#include "train.h"

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sluice data IN... -o OUT.bin [--val-fraction F] [--fim RATE [--seed N]]\n"
		"\n"
		"Turn text files into a token shard with the byte-level tokenizer (a token per\n"
		"byte, vocabulary 256), in llm.c's format: 256 int32 header (magic 20240520,\n"
		"version 1, token count) then uint16 tokens.  'sluice train --data' reads it,\n"
		"and llm.c's own shards (GPT-2 tokens) too.\n"
		"\n"
		"  -o OUT.bin          the shard to write (written to a temp file, then renamed)\n"
		"  --val-fraction F    put the last fraction F (0 <= F < 1) of the tokens in\n"
		"                      OUT_val.bin, for 'sluice train --val-data'\n"
		"  --fim RATE          Fill-In-the-Middle, as DeepSeek-V3 (RATE 0.1): each input\n"
		"                      file is a document, and with probability RATE it becomes\n"
		"                      <|fim_begin|> prefix <|fim_hole|> suffix <|fim_end|> middle\n"
		"                      (sentinel tokens 256, 257, 258: the model needs vocab >= 259)\n"
		"  --seed N            the seed of the FIM choices and cut points (default 1337)\n");
}


int cmd_data(int argc, char **argv)
{
	const char *out = NULL, *frac_s = NULL, *fim_s = NULL, *seed_s = NULL;
	const char **in = rt_calloc((size_t)argc, sizeof *in);
	int n_in = 0, rc = EXIT_USAGE;
	for (int i = 1; i < argc;) {
		int r;
		if (args_is_help(argv[i])) {
			usage(stdout);
			rc = EXIT_OK;
			goto done;
		}
		if ((r = args_take_value(argc, argv, &i, "-o", &out, "data")) ||
		    (r = args_take_value(argc, argv, &i, "--val-fraction", &frac_s, "data")) ||
		    (r = args_take_value(argc, argv, &i, "--fim", &fim_s, "data")) ||
		    (r = args_take_value(argc, argv, &i, "--seed", &seed_s, "data"))) {
			if (r < 0)
				goto done;
			continue;
		}
		if (argv[i][0] == '-' && argv[i][1]) {
			fprintf(stderr, "sluice data: unknown option '%s'\n", argv[i]);
			usage(stderr);
			goto done;
		}
		in[n_in++] = argv[i++];
	}
	if (!n_in || !out) {
		fprintf(stderr, "sluice data: %s\n", !n_in ? "no input files" : "-o OUT.bin is required");
		usage(stderr);
		goto done;
	}
	double frac = 0.0;
	if (frac_s) {
		char *end;
		frac = strtod(frac_s, &end);
		if (*end || !(frac >= 0.0 && frac < 1.0)) {
			fprintf(stderr, "sluice data: --val-fraction takes a number in [0, 1), got '%s'\n",
				frac_s);
			goto done;
		}
	}
	double fim = 0.0;
	if (fim_s) {
		char *end;
		fim = strtod(fim_s, &end);
		if (*end || !(fim >= 0.0 && fim <= 1.0)) {
			fprintf(stderr, "sluice data: --fim takes a rate in [0, 1], got '%s'\n", fim_s);
			goto done;
		}
	}
	uint64_t seed = 1337;
	if (seed_s) {
		char *end;
		seed = strtoull(seed_s, &end, 10);
		if (*end || !*seed_s || *seed_s == '-') {
			fprintf(stderr, "sluice data: --seed takes a non-negative integer, got '%s'\n",
				seed_s);
			goto done;
		}
	}
	rc = EXIT_INPUT;
	unsigned char *text = NULL;
	size_t len = 0;
	size_t *doc_end = rt_calloc((size_t)n_in, sizeof *doc_end);
	for (int k = 0; k < n_in; k++) {
		size_t n;
		char *t = rt_read_file(in[k], &n);
		if (!t) {
			fprintf(stderr, "sluice data: %s: %s\n", in[k], strerror(errno));
			free(text);
			free(doc_end);
			goto done;
		}
		text = rt_realloc(text, len + n);
		memcpy(text + len, t, n);
		len += n;
		doc_end[k] = len;
		free(t);
	}
	char *val = frac > 0.0 ? train_val_shard_name(out) : NULL;
	fprintf(stderr, "sluice data: %d file%s, %zu bytes of text, a token per byte\n", n_in,
		n_in == 1 ? "" : "s", len);
	if (fim > 0.0)
		rc = train_write_fim_shards(text, doc_end, n_in, fim, seed, frac, out, val, stderr)
			     ? EXIT_INPUT : EXIT_OK;
	else
		rc = train_write_text_shards(text, len, frac, out, val, stderr) ? EXIT_INPUT : EXIT_OK;
	free(doc_end);
	free(val);
	free(text);
done:
	free(in);
	return rc;
}

char *train_val_shard_name(const char *out)
{
	size_t n = strlen(out);
	char *s = rt_malloc(n + 8);
	if (n > 4 && !strcmp(out + n - 4, ".bin"))
		snprintf(s, n + 8, "%.*s_val.bin", (int)(n - 4), out);
	else
		snprintf(s, n + 8, "%s_val", out);
	return s;
}

static int write_tokens(const unsigned char *text, size_t n, const char *path, FILE *log)
{
	uint16_t *tok = rt_malloc(2 * (n ? n : 1));
	rt_tokenize_bytes(text, n, tok);
	int rc = rt_shard_write(path, tok, (int64_t)n, log);
	free(tok);
	if (!rc)
		fprintf(log, "  %s: %zu tokens\n", path, n);
	return rc;
}

int train_write_text_shards(const unsigned char *text, size_t len, double val_fraction,
			    const char *train_path, const char *val_path, FILE *log)
{
	size_t n_val = val_path ? (size_t)((double)len * val_fraction) : 0;
	if (len - n_val < 2 || (val_path && n_val < 2)) {
		fprintf(log, "sluice data: %zu bytes of text are too few to make %s\n", len,
			val_path ? "a training and a validation shard" : "a shard");
		return -1;
	}
	if (len > INT32_MAX) {
		fprintf(log, "sluice data: %zu bytes of text: more than one shard holds (%d); "
			"split the input\n", len, INT32_MAX);
		return -1;
	}
	if (write_tokens(text, len - n_val, train_path, log))
		return -1;
	if (val_path && write_tokens(text + len - n_val, n_val, val_path, log))
		return -1;
	return 0;
}

/* FIM per document (each input file), then the shards as train_write_text_shards cuts
 * them: the validation shard is the last fraction of the tokens. */
int train_write_fim_shards(const unsigned char *text, const size_t *doc_end, int n_docs,
			   double fim, uint64_t seed, double val_fraction, const char *train_path,
			   const char *val_path, FILE *log)
{
	size_t len = n_docs ? doc_end[n_docs - 1] : 0;
	uint16_t *bytes = rt_malloc(2 * (len ? len : 1));
	uint16_t *tok = rt_malloc(2 * (len + 3 * (size_t)n_docs + 1));
	rt_tokenize_bytes(text, len, bytes);
	size_t n = 0, start = 0;
	int n_fim = 0;
	for (int k = 0; k < n_docs; k++) {
		size_t dn = doc_end[k] - start;
		size_t w = rt_fim_document(bytes + start, dn, fim, seed, (uint64_t)k, tok + n);
		n_fim += w != dn;
		n += w;
		start = doc_end[k];
	}
	free(bytes);
	fprintf(log, "sluice data: %d of %d documents in FIM form (rate %g, seed %llu); the "
		"model needs vocab >= %d\n", n_fim, n_docs, fim, (unsigned long long)seed,
		RT_FIM_VOCAB);
	size_t n_val = val_path ? (size_t)((double)n * val_fraction) : 0;
	int rc = -1;
	if (n - n_val < 2 || (val_path && n_val < 2))
		fprintf(log, "sluice data: %zu tokens are too few to make %s\n", n,
			val_path ? "a training and a validation shard" : "a shard");
	else if (n > INT32_MAX)
		fprintf(log, "sluice data: %zu tokens: more than one shard holds (%d); split the "
			"input\n", n, INT32_MAX);
	else if (!rt_shard_write(train_path, tok, (int64_t)(n - n_val), log) &&
		 (!val_path || !rt_shard_write(val_path, tok + n - n_val, (int64_t)n_val, log))) {
		fprintf(log, "  %s: %zu tokens\n", train_path, n - n_val);
		if (val_path)
			fprintf(log, "  %s: %zu tokens\n", val_path, n_val);
		rc = 0;
	}
	free(tok);
	return rc;
}
