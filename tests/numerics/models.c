/* models.c - finite-difference checks of the whole backward of tiny_gpt and tiny_moe
 * (models/), made tiny with --set overrides: a random subset of the entries of every
 * parameter, in float64 on the reference executor (bound: numerics.h).  Parameters
 * are drawn at std 0.3 rather than the models' 0.02 so that every path (attention,
 * routing, experts, MTP) carries a gradient well above the bound. */
#include "numerics.h"

#include "frontend/frontend.h"

static void tokens(struct tdata *d, const char *name, int n, int vocab, int ignore_every)
{
	double *p = tdata_set(d, name, n, NULL);
	for (int i = 0; i < n; i++)
		p[i] = ignore_every && i % ignore_every == ignore_every - 1
			       ? -1
			       : (double)(int)(rnd_uniform() * vocab);
}

static void check_model(const char *file, int n_over, const struct sl_override *over,
			int per_param)
{
	struct ir_graph *gf = sl_compile_file(file, n_over, over, stderr);
	struct ir_graph *gb = sl_compile_file(file, n_over, over, stderr);
	REQUIRE(gf && gb);
	const struct ir_value *tok = NULL;
	for (int i = 0; i < gf->n_ops; i++)
		if (gf->ops[i]->kind == IR_OP_INPUT && !strcmp(ir_op_str(gf->ops[i], "name", ""), "tokens"))
			tok = gf->ops[i]->out[0];
	REQUIRE(tok);
	int n = (int)ir_shape_numel(&tok->shape);
	struct tdata d = { 0 };
	tokens(&d, "tokens", n, 32, 0);
	tokens(&d, "targets", n, 32, 5); /* every fifth target ignored */
	int checked = gradcheck_graphs(file, gf, gb, &d, 0.3, per_param);
	CHECK(checked > 0);

	/* the differentiated graph prints, parses back and prints the same */
	char *t1 = NULL, *t2 = NULL;
	size_t n1 = 0, n2 = 0;
	FILE *f = open_memstream(&t1, &n1);
	REQUIRE(f);
	ir_print(gb, f);
	fclose(f);
	struct ir_graph *gp = ir_parse(t1, n1, file, stderr);
	CHECKF(gp != NULL, "%s: the differentiated graph does not parse back", file);
	if (gp) {
		f = open_memstream(&t2, &n2);
		REQUIRE(f);
		ir_print(gp, f);
		fclose(f);
		CHECKF(n1 == n2 && !memcmp(t1, t2, n1), "%s: print, parse, print differs", file);
		ir_graph_free(gp);
	}
	free(t1);
	free(t2);
	ir_graph_free(gf);
	ir_graph_free(gb);
	tdata_free(&d);
}

int main(void)
{
	const struct sl_override gpt[] = {
		{ "dim", "16" }, { "layers", "2" }, { "heads", "2" }, { "ffn_dim", "32" },
		{ "batch", "2" }, { "seq", "8" }, { "vocab", "32" },
	};
	check_model("models/tiny_gpt.sl", (int)(sizeof gpt / sizeof gpt[0]), gpt, 6);
	const struct sl_override moe[] = {
		{ "dim", "16" }, { "layers", "2" }, { "heads", "2" }, { "dense_dim", "32" },
		{ "experts", "4" }, { "top_k", "2" }, { "expert_dim", "8" },
		{ "batch", "2" }, { "seq", "8" }, { "vocab", "32" },
	};
	check_model("models/tiny_moe.sl", (int)(sizeof moe / sizeof moe[0]), moe, 4);
	return CHECK_DONE();
}
