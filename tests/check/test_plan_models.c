/* test_plan_models.c - the memory plan of every model in models/ after the pass
 * pipeline (autodiff included): no two values live at once share a byte, the peak
 * lies between the largest live set and one slot per value.  And the activation rule
 * of passes/account.c, applied to the forward graph, against the exact figure the
 * backward gives (the forward values it reads). */
#include <dirent.h>
#include <string.h>

#include "check.h"
#include "frontend/frontend.h"
#include "passes/passes.h"
#include "plan_check.h"

static void plan_model(const char *path)
{
	struct ir_graph *g = sl_compile_file(path, 0, NULL, stderr);
	CHECKF(g != NULL, "%s does not compile", path);
	if (!g)
		return;
	struct pass_account fwd, bwd;
	/* the forward graph as it is trained: with its precision's casts (sluice check's
	 * order) */
	REQUIRE(pass_pipeline_run(g, "bf16", stderr) == 0);
	REQUIRE(pass_account(g, &fwd) == 0);
	/* through autodiff: the passes after it cut the model over a layout's ranks (a
	 * model file that asks for ep shards its experts there) */
	int rc = pass_pipeline_run(g, "autodiff", stderr);
	CHECKF(rc == 0, "%s: the pass pipeline failed", path);
	if (rc == 0) {
		REQUIRE(pass_account(g, &bwd) == 0);
		/* the forward-graph rule predicts what the backward reads */
		CHECKF(bwd.activation_bytes == fwd.activation_bytes,
		       "%s: activations %lld by the rule, %lld read by the backward", path,
		       (long long)fwd.activation_bytes, (long long)bwd.activation_bytes);
		CHECK(bwd.params_total == fwd.params_total);
		CHECK(bwd.params_active == fwd.params_active);
		CHECK(bwd.flops_per_token == fwd.flops_per_token);
		pass_account_free(&bwd);
		for (size_t align = 1; align <= 256; align *= 16) {
			struct pass_memplan p;
			REQUIRE(pass_memplan(g, align, &p) == 0);
			int64_t live = check_plan(g, &p, (int64_t)align);
			printf("%-30s align %3zu: %5d ops, peak %.6g MiB, %.2f%% over the "
			       "largest live set\n", path, align, g->n_ops,
			       (double)p.peak / (1 << 20),
			       100.0 * ((double)p.peak / (double)live - 1));
			pass_memplan_free(&p);
		}
	}
	pass_account_free(&fwd);
	ir_graph_free(g);
}

int main(void)
{
	DIR *d = opendir("models");
	REQUIRE(d);
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		size_t len = strlen(e->d_name);
		if (len < 4 || strcmp(e->d_name + len - 3, ".sl"))
			continue;
		char path[512];
		snprintf(path, sizeof path, "models/%s", e->d_name);
		plan_model(path);
		n++;
	}
	closedir(d);
	CHECKF(n >= 3, "only %d models in models/", n);
	return CHECK_DONE();
}
