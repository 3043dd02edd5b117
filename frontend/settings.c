/*
 * settings.c - the train settings sluice knows: one table, and the checks against it.
 *
 * Every setting of a train section, every --set of a train setting and every setting of
 * a graph read from textual IR is checked here: its name must be in the table (a removed
 * name is refused with its replacement), its value of the setting's kind and in its
 * range.  The names are the ones the training engine reads; a name in the table that the
 * engine does not read would be a setting silently ignored, which is what this table is
 * for.  Whether an engine can honour a value it accepts here (a schedule not built yet,
 * bf16 on a CPU) is the engine's decision, not the frontend's.
 *
 * The frontend's own diagnostics (with a location) are in lower.c; this file gives the
 * words, so that a model and a textual IR graph are refused alike.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "frontend/fe.h"

#define INF HUGE_VAL

static const struct sl_setting table[] = {
	{ "steps", SL_SETTING_INT, 1, INF, 0, 0, NULL, NULL, "optimizer steps of the run" },
	{ "batch", SL_SETTING_INT, 1, INF, 0, 0, NULL, NULL,
	  "sequences per micro-batch (graph inputs may use it)" },
	{ "seq", SL_SETTING_INT, 1, INF, 0, 0, NULL, NULL,
	  "tokens per sequence (graph inputs may use it)" },
	{ "global_batch", SL_SETTING_INT, 1, INF, 0, 0, NULL, NULL,
	  "sequences per optimizer step over all ranks: batch x microbatches x dp" },
	{ "microbatches", SL_SETTING_INT, 1, INF, 0, 0, NULL, NULL,
	  "micro-batches per data-parallel rank per step" },
	{ "optimizer", SL_SETTING_CHOICE, 0, 0, 0, 0, "adamw", NULL,
	  "the optimizer; adamw(lr = ..., beta1 = ...) also sets its hyper-parameters" },
	{ "lr", SL_SETTING_FLOAT, 0, INF, 1, 0, NULL, NULL, "peak learning rate" },
	{ "min_lr", SL_SETTING_FLOAT, 0, INF, 0, 0, NULL, NULL,
	  "learning rate at the end of the cosine decay (default lr / 10)" },
	{ "warmup", SL_SETTING_INT, 0, INF, 0, 0, NULL, NULL, "steps of linear warm-up" },
	{ "wd", SL_SETTING_FLOAT, 0, INF, 0, 0, NULL, NULL, "AdamW weight decay" },
	{ "clip", SL_SETTING_FLOAT, 0, INF, 0, 0, NULL, NULL,
	  "gradient clipping by global norm (0: off)" },
	{ "beta1", SL_SETTING_FLOAT, 0, 1, 0, 1, NULL, NULL, "AdamW first-moment decay" },
	{ "beta2", SL_SETTING_FLOAT, 0, 1, 0, 1, NULL, NULL, "AdamW second-moment decay" },
	{ "eps", SL_SETTING_FLOAT, 0, INF, 1, 0, NULL, NULL, "AdamW epsilon" },
	{ "seed", SL_SETTING_INT, 0, INF, 0, 0, NULL, NULL,
	  "seed of initialisation and data order" },
	{ "val_batches", SL_SETTING_INT, 1, INF, 0, 0, NULL, NULL,
	  "batches of each validation" },
	{ "precision", SL_SETTING_CHOICE, 0, 0, 0, 0, "fp32 bf16 fp8", NULL,
	  "precision of the matrix products (fp8: DeepSeek-V3's recipe)" },
	{ "pp", SL_SETTING_INT, 1, INF, 0, 0, NULL, NULL, "pipeline-parallel ranks" },
	{ "ep", SL_SETTING_INT, 1, INF, 0, 0, NULL, NULL,
	  "expert-parallel ranks (divides dp and the experts)" },
	{ "ep_capacity", SL_SETTING_FLOAT, 1, INF, 0, 0, "worst", NULL,
	  "expert-parallel receive buffers: this many times the rows of an even routing, or "
	  "worst (every row to one rank); an overflow re-runs the step with larger ones" },
	{ "zero", SL_SETTING_INT, 0, 1, 0, 0, NULL, NULL,
	  "1: optimizer state sharded over data-parallel ranks (ZeRO-1)" },
	{ "schedule", SL_SETTING_CHOICE, 0, 0, 0, 0, "1f1b zb1p dualpipe dualpipev", NULL,
	  "pipeline schedule" },
	{ "recompute", SL_SETTING_LIST, 0, 0, 0, 0, "norm swiglu mla_up layers", NULL,
	  "what the backward computes again instead of keeping it from the forward: "
	  "norm, swiglu, mla_up, layers, a list of them (norm, swiglu) or none" },
	{ "fim", SL_SETTING_FLOAT, 0, 1, 0, 0, NULL, NULL,
	  "fraction of sequences in fill-in-the-middle form" },
	{ "ema", SL_SETTING_FLOAT, 0, 1, 0, 1, NULL, NULL,
	  "decay of an exponential moving average of the weights (0: off)" },
	{ "comm_sms", SL_SETTING_INT, 0, 1024, 0, 0, NULL, NULL,
	  "GPU ranks: the SMs (thread blocks) each communication kernel may take, NCCL's "
	  "and the symmetric all-to-all's (0: NCCL's choice; DeepSeek-V3 gave 20 of 132)" },
	/* other names the engine reads for the same settings */
	{ "optimizer.lr", SL_SETTING_FLOAT, 0, INF, 1, 0, NULL, "lr", NULL },
	{ "optimizer.beta1", SL_SETTING_FLOAT, 0, 1, 0, 1, NULL, "beta1", NULL },
	{ "optimizer.beta2", SL_SETTING_FLOAT, 0, 1, 0, 1, NULL, "beta2", NULL },
	{ "optimizer.eps", SL_SETTING_FLOAT, 0, INF, 1, 0, NULL, "eps", NULL },
	{ "optimizer.wd", SL_SETTING_FLOAT, 0, INF, 0, 0, NULL, "wd", NULL },
	{ "lr_min", SL_SETTING_FLOAT, 0, INF, 0, 0, NULL, "min_lr", NULL },
	{ "weight_decay", SL_SETTING_FLOAT, 0, INF, 0, 0, NULL, "wd", NULL },
	{ "grad_clip", SL_SETTING_FLOAT, 0, INF, 0, 0, NULL, "clip", NULL },
};

#define N_TABLE ((int)(sizeof table / sizeof table[0]))

/* names that were settings once, or look like ones, with what to write instead */
static const struct {
	const char *name, *hint;
} removed[] = {
	{ "pipeline", "write pp = STAGES and schedule = 1f1b | zb1p | dualpipe | dualpipev" },
	{ "experts", "write ep = RANKS for expert parallelism (the experts are the moe's)" },
	{ "data", "data parallelism is what the ranks leave: dp = ranks / pp; the batch of a "
		  "step is global_batch" },
	{ "stages", "write pp = STAGES" },
	{ "dp", "dp is not a setting: dp = ranks / pp" },
};

const struct sl_setting *sl_settings(int *n)
{
	*n = N_TABLE;
	return table;
}

const struct sl_setting *sl_setting_find(const char *name)
{
	for (int i = 0; i < N_TABLE; i++)
		if (!strcmp(table[i].name, name))
			return &table[i];
	return NULL;
}

static void say(char *buf, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void say(char *buf, size_t n, const char *fmt, ...)
{
	if (!n)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, n, fmt, ap);
	va_end(ap);
}

/* "fp32, bf16 or fp8" */
static void choices_text(const char *choices, char *buf, size_t n)
{
	char words[8][32];
	int k = 0;
	for (const char *p = choices; *p && k < 8;) {
		size_t l = strcspn(p, " ");
		snprintf(words[k++], sizeof words[0], "%.*s", (int)l, p);
		p += l;
		p += *p == ' ';
	}
	buf[0] = 0;
	for (int i = 0; i < k; i++) {
		size_t used = strlen(buf);
		snprintf(buf + used, n - used, "%s%s", i == 0 ? "" : i == k - 1 ? " or " : ", ",
			 words[i]);
	}
}

static int is_choice(const char *choices, const char *s)
{
	size_t l = strlen(s);
	for (const char *p = choices; *p;) {
		size_t w = strcspn(p, " ");
		if (w == l && !strncmp(p, s, l))
			return 1;
		p += w;
		p += *p == ' ';
	}
	return 0;
}

static void range_text(const struct sl_setting *s, char *buf, size_t n)
{
	const char *what = s->kind == SL_SETTING_INT ? "an integer" : "a number";
	if (s->hi == INF) {
		if (s->lo_open)
			say(buf, n, "%s > %g", what, s->lo);
		else
			say(buf, n, "%s >= %g", what, s->lo);
	} else if (s->kind == SL_SETTING_INT && s->hi - s->lo == 1) {
		say(buf, n, "%g or %g", s->lo, s->hi);
	} else {
		say(buf, n, "%s in %c%g, %g%c", what, s->lo_open ? '(' : '[', s->lo, s->hi,
		    s->hi_open ? ')' : ']');
	}
}

int sl_setting_check_name(const char *name, char *msg, size_t msg_n, char *hint, size_t hint_n)
{
	say(msg, msg_n, "%s", "");
	say(hint, hint_n, "%s", "");
	for (size_t i = 0; i < sizeof removed / sizeof removed[0]; i++)
		if (!strcmp(removed[i].name, name)) {
			say(msg, msg_n, "'%s' is not a train setting", name);
			say(hint, hint_n, "%s", removed[i].hint);
			return 1;
		}
	if (!sl_setting_find(name)) {
		const char *names[N_TABLE];
		for (int i = 0; i < N_TABLE; i++)
			names[i] = table[i].name;
		const char *c = fe_closest(name, names, N_TABLE);
		say(msg, msg_n, "unknown train setting '%s'", name);
		if (c)
			say(hint, hint_n, "did you mean '%s'?", c);
		else
			say(hint, hint_n, "the train settings are listed in docs/language.md");
		return 1;
	}
	return 0;
}

int sl_setting_check(const char *name, int is_str, double num, const char *str, char *msg,
		     size_t msg_n, char *hint, size_t hint_n)
{
	if (sl_setting_check_name(name, msg, msg_n, hint, hint_n))
		return 1;
	const struct sl_setting *s = sl_setting_find(name);
	char want[128];
	if (s->kind == SL_SETTING_CHOICE) {
		choices_text(s->choices, want, sizeof want);
		if (!is_str) {
			say(msg, msg_n, "'%s' is %s, not a number (%g)", name, want, num);
			return 1;
		}
		if (!is_choice(s->choices, str)) {
			const char *only = strchr(s->choices, ' ') ? "" : "only ";
			say(msg, msg_n, "'%s' is %s%s, not '%s'", name, only, want, str);
			if (!strcmp(name, "optimizer"))
				say(hint, hint_n, "sluice trains with adamw only");
			else if (!strcmp(name, "schedule") && !strcmp(str, "zero_bubble"))
				say(hint, hint_n, "zero-bubble 1F1B is zb1p");
			return 1;
		}
		return 0;
	}
	if (s->kind == SL_SETTING_LIST) {
		choices_text(s->choices, want, sizeof want);
		if (!is_str) {
			say(msg, msg_n, "'%s' is a list of %s (or none), not a number (%g)", name,
			    want, num);
			return 1;
		}
		if (!strcmp(str, "none"))
			return 0;
		for (const char *p = str; *p;) {
			p += strspn(p, " ,");
			size_t l = strcspn(p, " ,");
			if (!l)
				break;
			char word[64];
			snprintf(word, sizeof word, "%.*s", (int)l, p);
			if (!is_choice(s->choices, word)) {
				say(msg, msg_n, "'%s' is a list of %s (or none), not '%s'", name,
				    want, word);
				say(hint, hint_n, "for example %s = \"norm, swiglu\"", name);
				return 1;
			}
			p += l;
		}
		return 0;
	}
	range_text(s, want, sizeof want);
	/* a number setting may take words too (ep_capacity = worst) */
	if (s->choices) {
		if (is_str && is_choice(s->choices, str))
			return 0;
		char words[64];
		size_t used = strlen(want);
		choices_text(s->choices, words, sizeof words);
		snprintf(want + used, sizeof want - used, " or %s", words);
	}
	if (is_str) {
		say(msg, msg_n, "'%s' is %s, not '%s'", name, want, str);
		return 1;
	}
	int bad = !isfinite(num) || (s->kind == SL_SETTING_INT && num != floor(num));
	bad = bad || (s->lo_open ? !(num > s->lo) : !(num >= s->lo));
	bad = bad || (s->hi_open ? !(num < s->hi) : !(num <= s->hi));
	if (bad) {
		say(msg, msg_n, "'%s' is %s, not %g", name, want, num);
		if (s->alias_of)
			say(hint, hint_n, "'%s' is another name of '%s'", name, s->alias_of);
		return 1;
	}
	return 0;
}

int sl_settings_check_graph(const struct ir_graph *g, FILE *err)
{
	int bad = 0;
	for (int i = 0; i < g->n_settings; i++) {
		const struct ir_setting *st = &g->settings[i];
		char msg[256], hint[256];
		if (!sl_setting_check(st->name, st->is_str, st->num, st->str, msg, sizeof msg, hint,
				      sizeof hint))
			continue;
		bad++;
		if (err) {
			fprintf(err, "error: train setting: %s\n", msg);
			if (hint[0])
				fprintf(err, "  hint: %s\n", hint);
		}
	}
	return bad;
}
