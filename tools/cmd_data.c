/* cmd_data.c - 'sluice data IN... -o OUT.bin [--val-fraction F]': text to token shards
 * with the byte-level tokenizer (one token per byte, vocabulary 256), in llm.c's shard
 * format.  With --val-fraction, the last fraction of the tokens goes to a second shard,
 * OUT_val.bin, for validation. */
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
		"usage: sluice data IN... -o OUT.bin [--val-fraction F]\n"
		"\n"
		"Turn text files into a token shard with the byte-level tokenizer (a token per\n"
		"byte, vocabulary 256), in llm.c's format: 256 int32 header (magic 20240520,\n"
		"version 1, token count) then uint16 tokens.  'sluice train --data' reads it,\n"
		"and llm.c's own shards (GPT-2 tokens) too.\n"
		"\n"
		"  -o OUT.bin          the shard to write (written to a temp file, then renamed)\n"
		"  --val-fraction F    put the last fraction F (0 <= F < 1) of the tokens in\n"
		"                      OUT_val.bin, for 'sluice train --val-data'\n");
}

int cmd_data(int argc, char **argv)
{
	const char *out = NULL, *frac_s = NULL;
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
		    (r = args_take_value(argc, argv, &i, "--val-fraction", &frac_s, "data"))) {
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
	rc = EXIT_INPUT;
	unsigned char *text = NULL;
	size_t len = 0;
	for (int k = 0; k < n_in; k++) {
		size_t n;
		char *t = rt_read_file(in[k], &n);
		if (!t) {
			fprintf(stderr, "sluice data: %s: %s\n", in[k], strerror(errno));
			free(text);
			goto done;
		}
		text = rt_realloc(text, len + n);
		memcpy(text + len, t, n);
		len += n;
		free(t);
	}
	char *val = frac > 0.0 ? train_val_shard_name(out) : NULL;
	fprintf(stderr, "sluice data: %d file%s, %zu bytes of text, a token per byte\n", n_in,
		n_in == 1 ? "" : "s", len);
	rc = train_write_text_shards(text, len, frac, out, val, stderr) ? EXIT_INPUT : EXIT_OK;
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
