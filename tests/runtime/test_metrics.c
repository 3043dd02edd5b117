/* test_metrics.c - JSON-lines metrics: one object a line, exact floats, NaN as null,
 * nested objects, append mode; the progress display's plain lines and durations. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "runtime/metrics.h"
#include "runtime/progress.h"
#include "runtime/rt.h"

int main(void)
{
	char path[] = "/tmp/sluice-test-metrics-XXXXXX";
	int fd = mkstemp(path);
	REQUIRE(fd >= 0);
	close(fd);
	struct rt_metrics *m = rt_metrics_open(path, 0, stderr);
	REQUIRE(m);
	float loss = 5.553318977355957f;
	rt_metrics_begin(m);
	rt_metrics_num(m, "step", 1);
	rt_metrics_num(m, "loss", loss);
	rt_metrics_num(m, "val_loss", NAN);
	rt_metrics_sub_num(m, "load", "layers.1.moe", 1.25);
	rt_metrics_sub_num(m, "load", "layers.2.moe", 4);
	CHECK(rt_metrics_end(m) == 0);
	rt_metrics_close(m);
	m = rt_metrics_open(path, 1, stderr);
	REQUIRE(m);
	rt_metrics_begin(m);
	rt_metrics_num(m, "step", 2);
	CHECK(rt_metrics_end(m) == 0);
	rt_metrics_close(m);
	size_t len;
	char *text = rt_read_file(path, &len);
	REQUIRE(text);
	const char *want = "{\"step\":1,\"loss\":5.553318977355957,\"val_loss\":null,"
			   "\"load\":{\"layers.1.moe\":1.25,\"layers.2.moe\":4}}\n{\"step\":2}\n";
	CHECKF(!strcmp(text, want), "got:\n%s", text);
	/* the float read back is the float written: resumed runs compare losses exactly */
	const char *l = strstr(text, "\"loss\":");
	REQUIRE(l);
	CHECK((float)strtod(l + 7, NULL) == loss);
	free(text);
	unlink(path);

	char *out = NULL;
	size_t olen = 0;
	FILE *f = open_memstream(&out, &olen);
	struct rt_progress p;
	rt_progress_init(&p, f, 30, 0);
	for (int s = 1; s <= 30; s++)
		rt_progress_step(&p, s, 2.5, s == 30 ? 2.0 : NAN, 12345.0, 30 - s);
	rt_progress_note(&p, "step %d: val_loss %.2f", 30, 1.5);
	rt_progress_done(&p);
	fclose(f);
	CHECKF(strstr(out, "step 1/30  loss 2.5000  12.3k tok/s  ETA 29s\n") != NULL, "%s", out);
	CHECKF(strstr(out, "step 10/30") && strstr(out, "step 20/30") && !strstr(out, "step 11/30"),
	       "%s", out);
	CHECKF(strstr(out, "step 30/30  loss 2.5000 (lm 2.0000)  12.3k tok/s  ETA 0s\n"), "%s", out);
	CHECK(strstr(out, "step 30: val_loss 1.50\n") != NULL);
	CHECK(!strchr(out, '\r')); /* no terminal control in a log */
	free(out);
	char d[32];
	CHECK(!strcmp(rt_format_duration(3725, d, sizeof d), "1h02m"));
	CHECK(!strcmp(rt_format_duration(192, d, sizeof d), "3m12s"));
	CHECK(!strcmp(rt_format_duration(45, d, sizeof d), "45s"));
	CHECK(!strcmp(rt_format_duration(NAN, d, sizeof d), "?"));
	return CHECK_DONE();
}
