/* metrics.c - JSON-lines metrics (see metrics.h). */
#include "metrics.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "rt.h"

struct rt_metrics {
	FILE *f;
	cJSON *row;
};

struct rt_metrics *rt_metrics_open(const char *path, int append, FILE *err)
{
	FILE *f = fopen(path, append ? "a" : "w");
	if (!f) {
		fprintf(err, "sluice: %s: cannot open the metrics file: %s\n", path,
			strerror(errno));
		return NULL;
	}
	struct rt_metrics *m = rt_calloc(1, sizeof *m);
	m->f = f;
	return m;
}

void rt_metrics_close(struct rt_metrics *m)
{
	if (!m)
		return;
	cJSON_Delete(m->row);
	fclose(m->f);
	free(m);
}

void rt_metrics_begin(struct rt_metrics *m)
{
	cJSON_Delete(m->row);
	m->row = cJSON_CreateObject();
}

void rt_metrics_num(struct rt_metrics *m, const char *key, double v)
{
	cJSON_AddNumberToObject(m->row, key, v);
}

void rt_metrics_sub_num(struct rt_metrics *m, const char *obj, const char *key, double v)
{
	cJSON *o = cJSON_GetObjectItemCaseSensitive(m->row, obj);
	if (!o)
		o = cJSON_AddObjectToObject(m->row, obj);
	cJSON_AddNumberToObject(o, key, v);
}

int rt_metrics_end(struct rt_metrics *m)
{
	char *s = cJSON_PrintUnformatted(m->row);
	RT_ASSERT(s);
	cJSON_Delete(m->row);
	m->row = NULL;
	int bad = fprintf(m->f, "%s\n", s) < 0 || fflush(m->f) != 0;
	free(s);
	return bad ? -1 : 0;
}
